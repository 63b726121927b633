package main

import (
	"context"
	"fmt"
	"log"
	"sort"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// vApps: vcsim's CreateVApp keeps only the annotation and product names of the spec, has no
// UpdateVAppConfig, PowerOnVApp_Task or PowerOffVApp_Task, and its Destroy moves the child
// VMs to the parent pool. The lab keeps the whole VAppConfigSpec (products, properties,
// entityConfig with start order, delays and actions, IP assignment, EULAs, OVF sections),
// gives every child VM an entityConfig entry and parentVApp, powers children on in start
// order (off in reverse), and destroys the children with the vApp, as vCenter does.

// vappState is what the lab records about a vApp beyond the simulator's object.
type vappState struct {
	// LastPowerOn lists the VMs (moref values) in the order the last PowerOnVApp_Task
	// powered them on; LastPowerOff likewise for PowerOffVApp_Task.
	LastPowerOn  []string
	LastPowerOff []string
}

func (l *lab) vappRecord(ref string) *vappState {
	s := l.vapps[ref]
	if s == nil {
		s = &vappState{}
		l.vapps[ref] = s
	}
	return s
}

// findVApp finds a vApp by name or moref value.
func findVApp(name string) (*simulator.VirtualApp, error) {
	if name == "" {
		return nil, fmt.Errorf("no vApp name given")
	}
	var found []*simulator.VirtualApp
	for _, e := range simulator.Map.All("VirtualApp") {
		a, ok := e.(*simulator.VirtualApp)
		if ok && (a.Name == name || a.Self.Value == name) {
			found = append(found, a)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("no vApp named %q", name)
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("%d vApps are named %q; use the moref", len(found), name)
}

func vappByRef(ref types.ManagedObjectReference) (*simulator.VirtualApp, bool) {
	a, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualApp", Value: ref.Value}).(*simulator.VirtualApp)
	return a, ok
}

// applyVAppSpec merges a VAppConfigSpec into a vApp's VAppConfigInfo: array updates
// (add/edit/remove by key) for products and properties, entityConfig entries merged by
// entity, and the plain fields when set.
func applyVAppSpec(info *types.VAppConfigInfo, spec *types.VAppConfigSpec) types.BaseMethodFault {
	for _, p := range spec.Product {
		switch p.Operation {
		case types.ArrayUpdateOperationRemove:
			key, ok := removeKey(p.RemoveKey)
			if !ok {
				return &types.InvalidArgument{InvalidProperty: "product.removeKey"}
			}
			out := info.Product[:0]
			for _, x := range info.Product {
				if x.Key != key {
					out = append(out, x)
				}
			}
			info.Product = out
		default:
			if p.Info == nil {
				return &types.InvalidArgument{InvalidProperty: "product.info"}
			}
			replaced := false
			for i := range info.Product {
				if info.Product[i].Key == p.Info.Key && p.Operation == types.ArrayUpdateOperationEdit {
					info.Product[i] = *p.Info
					replaced = true
				}
			}
			if !replaced {
				if p.Operation == types.ArrayUpdateOperationEdit {
					return &types.InvalidArgument{InvalidProperty: "product.info.key"}
				}
				info.Product = append(info.Product, *p.Info)
			}
		}
	}
	for _, p := range spec.Property {
		switch p.Operation {
		case types.ArrayUpdateOperationRemove:
			key, ok := removeKey(p.RemoveKey)
			if !ok {
				return &types.InvalidArgument{InvalidProperty: "property.removeKey"}
			}
			out := info.Property[:0]
			for _, x := range info.Property {
				if x.Key != key {
					out = append(out, x)
				}
			}
			info.Property = out
		default:
			if p.Info == nil {
				return &types.InvalidArgument{InvalidProperty: "property.info"}
			}
			replaced := false
			for i := range info.Property {
				if info.Property[i].Key == p.Info.Key && p.Operation == types.ArrayUpdateOperationEdit {
					info.Property[i] = *p.Info
					replaced = true
				}
			}
			if !replaced {
				if p.Operation == types.ArrayUpdateOperationEdit {
					return &types.InvalidArgument{InvalidProperty: "property.info.key"}
				}
				for _, x := range info.Property {
					if x.Key == p.Info.Key {
						return &types.InvalidArgument{InvalidProperty: "property.info.key"}
					}
				}
				info.Property = append(info.Property, *p.Info)
			}
		}
	}
	for _, e := range spec.EntityConfig {
		if e.Key == nil {
			return &types.InvalidArgument{InvalidProperty: "entityConfig.key"}
		}
		merged := false
		for i := range info.EntityConfig {
			if k := info.EntityConfig[i].Key; k != nil && *k == *e.Key {
				info.EntityConfig[i] = mergeEntity(info.EntityConfig[i], e)
				merged = true
			}
		}
		if !merged {
			info.EntityConfig = append(info.EntityConfig, mergeEntity(defaultEntity(*e.Key, nextStartOrder(info)), e))
		}
	}
	if spec.Annotation != "" {
		info.Annotation = spec.Annotation
	}
	if spec.InstanceUuid != "" {
		info.InstanceUuid = spec.InstanceUuid
	}
	if spec.ManagedBy != nil {
		info.ManagedBy = spec.ManagedBy
	}
	if spec.IpAssignment != nil {
		info.IpAssignment = *spec.IpAssignment
	}
	if spec.Eula != nil {
		info.Eula = spec.Eula
	}
	if spec.OvfEnvironmentTransport != nil {
		info.OvfEnvironmentTransport = spec.OvfEnvironmentTransport
	}
	if spec.InstallBootRequired != nil {
		info.InstallBootRequired = *spec.InstallBootRequired
	}
	if spec.InstallBootStopDelay != 0 {
		info.InstallBootStopDelay = spec.InstallBootStopDelay
	}
	for _, s := range spec.OvfSection {
		if s.Info != nil && s.Operation != types.ArrayUpdateOperationRemove {
			info.OvfSection = append(info.OvfSection, *s.Info)
		}
	}
	return nil
}

func removeKey(k types.AnyType) (int32, bool) {
	switch v := k.(type) {
	case int32:
		return v, true
	case int:
		return int32(v), true
	case int64:
		return int32(v), true
	}
	return 0, false
}

// defaultEntity is what vCenter gives a VM added to a vApp.
func defaultEntity(ref types.ManagedObjectReference, order int32) types.VAppEntityConfigInfo {
	return types.VAppEntityConfigInfo{
		Key: &ref, StartOrder: order, StartDelay: 120, WaitingForGuest: types.NewBool(false),
		StartAction: "powerOn", StopDelay: 120, StopAction: "powerOff", DestroyWithParent: types.NewBool(true),
	}
}

func nextStartOrder(info *types.VAppConfigInfo) int32 {
	var max int32
	for _, e := range info.EntityConfig {
		if e.StartOrder > max {
			max = e.StartOrder
		}
	}
	return max + 1
}

// mergeEntity applies the fields an entityConfig spec sets.
func mergeEntity(cur, spec types.VAppEntityConfigInfo) types.VAppEntityConfigInfo {
	if spec.Tag != "" {
		cur.Tag = spec.Tag
	}
	if spec.StartOrder != 0 {
		cur.StartOrder = spec.StartOrder
	}
	if spec.StartDelay != 0 {
		cur.StartDelay = spec.StartDelay
	}
	if spec.WaitingForGuest != nil {
		cur.WaitingForGuest = spec.WaitingForGuest
	}
	if spec.StartAction != "" {
		cur.StartAction = spec.StartAction
	}
	if spec.StopDelay != 0 {
		cur.StopDelay = spec.StopDelay
	}
	if spec.StopAction != "" {
		cur.StopAction = spec.StopAction
	}
	if spec.DestroyWithParent != nil {
		cur.DestroyWithParent = spec.DestroyWithParent
	}
	return cur
}

// configureVApp applies spec to a vApp (after CreateVApp or for UpdateVAppConfig).
func (l *lab) configureVApp(ref types.ManagedObjectReference, spec *types.VAppConfigSpec) types.BaseMethodFault {
	a, ok := vappByRef(ref)
	if !ok {
		return &types.ManagedObjectNotFound{Obj: ref}
	}
	var fault types.BaseMethodFault
	simulator.Map.WithLock(a, func() {
		if a.VAppConfig == nil {
			a.VAppConfig = &types.VAppConfigInfo{}
		}
		// Work on a copy so a refused spec changes nothing.
		next := *a.VAppConfig
		next.Product = append([]types.VAppProductInfo(nil), a.VAppConfig.Product...)
		next.Property = append([]types.VAppPropertyInfo(nil), a.VAppConfig.Property...)
		next.EntityConfig = append([]types.VAppEntityConfigInfo(nil), a.VAppConfig.EntityConfig...)
		for _, e := range spec.EntityConfig {
			if e.Key != nil && !isChild(a, *e.Key) {
				fault = &types.InvalidArgument{InvalidProperty: "entityConfig.key"}
				return
			}
		}
		if fault = applyVAppSpec(&next, spec); fault == nil {
			*a.VAppConfig = next
		}
	})
	l.vappRecord(ref.Value)
	return fault
}

// isChild is true when ref is a VM or vApp directly in a. Call with a locked.
func isChild(a *simulator.VirtualApp, ref types.ManagedObjectReference) bool {
	for _, v := range a.Vm {
		if v == ref {
			return true
		}
	}
	for _, p := range a.ResourcePool.ResourcePool {
		if p.Value == ref.Value {
			return true
		}
	}
	return false
}

// adoptChildVM gives a VM created in a vApp its parentVApp and an entityConfig entry.
func (l *lab) adoptChildVM(vappRef, vmRef types.ManagedObjectReference) {
	a, ok := vappByRef(vappRef)
	if !ok {
		return
	}
	if vm, ok := simulator.Map.Get(vmRef).(*simulator.VirtualMachine); ok {
		simulator.Map.WithLock(vm, func() {
			r := types.ManagedObjectReference{Type: "VirtualApp", Value: vappRef.Value}
			vm.ParentVApp = &r
		})
	}
	simulator.Map.WithLock(a, func() {
		if a.VAppConfig == nil {
			a.VAppConfig = &types.VAppConfigInfo{}
		}
		for _, e := range a.VAppConfig.EntityConfig {
			if e.Key != nil && *e.Key == vmRef {
				return
			}
		}
		a.VAppConfig.EntityConfig = append(a.VAppConfig.EntityConfig, defaultEntity(vmRef, nextStartOrder(a.VAppConfig)))
	})
	l.vappRecord(vappRef.Value)
}

// startSequence lists a vApp's children in start order: entityConfig by startOrder (ties
// keep their entityConfig order), then children without an entry.
func startSequence(a *simulator.VirtualApp) []types.VAppEntityConfigInfo {
	var seq []types.VAppEntityConfigInfo
	simulator.Map.WithLock(a, func() {
		seen := map[types.ManagedObjectReference]bool{}
		if a.VAppConfig != nil {
			for _, e := range a.VAppConfig.EntityConfig {
				if e.Key != nil && isChild(a, *e.Key) {
					seq = append(seq, e)
					seen[*e.Key] = true
				}
			}
		}
		sort.SliceStable(seq, func(i, j int) bool { return seq[i].StartOrder < seq[j].StartOrder })
		for _, v := range a.Vm {
			if !seen[v] {
				v := v
				seq = append(seq, types.VAppEntityConfigInfo{Key: &v, StartAction: "powerOn", StopAction: "powerOff"})
			}
		}
	})
	return seq
}

// powerVApp powers a vApp's children on in start order, or off in reverse; nested vApps
// recursively. The delays are recorded but not waited for. It returns the VMs it powered,
// in order.
func (l *lab) powerVApp(ctx context.Context, ref types.ManagedObjectReference, on, force bool) ([]string, types.BaseMethodFault) {
	a, ok := vappByRef(ref)
	if !ok {
		return nil, &types.ManagedObjectNotFound{Obj: ref}
	}
	seq := startSequence(a)
	if !on {
		for i, j := 0, len(seq)-1; i < j; i, j = i+1, j-1 {
			seq[i], seq[j] = seq[j], seq[i]
		}
	}
	var done []string
	for _, e := range seq {
		action := e.StartAction
		if !on {
			action = e.StopAction
		}
		if action == "none" {
			continue
		}
		if e.Key.Type == "VirtualApp" || e.Key.Type == "ResourcePool" {
			sub, fault := l.powerVApp(ctx, types.ManagedObjectReference{Type: "VirtualApp", Value: e.Key.Value}, on, force)
			done = append(done, sub...)
			if fault != nil {
				return done, fault
			}
			continue
		}
		vm, ok := simulator.Map.Get(*e.Key).(*simulator.VirtualMachine)
		if !ok {
			continue
		}
		var state types.VirtualMachinePowerState
		simulator.Map.WithLock(vm, func() { state = vm.Runtime.PowerState })
		o := object.NewVirtualMachine(l.client, *e.Key)
		var t *object.Task
		var err error
		switch {
		case on && state != types.VirtualMachinePowerStatePoweredOn:
			t, err = o.PowerOn(ctx)
		case !on && state != types.VirtualMachinePowerStatePoweredOff:
			t, err = o.PowerOff(ctx)
		default:
			continue
		}
		if err == nil {
			_, err = t.WaitForResult(ctx, nil)
		}
		if err != nil {
			return done, asFault(err)
		}
		done = append(done, e.Key.Value)
	}
	rec := l.vappRecord(ref.Value)
	verb := "on"
	if on {
		rec.LastPowerOn = done
	} else {
		rec.LastPowerOff = done
		verb = "off"
	}
	log.Printf("lab: vApp %s (%s) powered %s: %s", a.Name, ref.Value, verb, strings.Join(done, ", "))
	return done, nil
}

// destroyVAppChildren powers off and destroys a vApp's VMs (and nested vApps) before the
// vApp itself is destroyed, as vCenter does.
func (l *lab) destroyVAppChildren(ctx context.Context, ref types.ManagedObjectReference) types.BaseMethodFault {
	a, ok := vappByRef(ref)
	if !ok {
		return nil
	}
	if _, fault := l.powerVApp(ctx, ref, false, true); fault != nil {
		return fault
	}
	var vms, pools []types.ManagedObjectReference
	simulator.Map.WithLock(a, func() {
		vms = append(vms, a.Vm...)
		pools = append(pools, a.ResourcePool.ResourcePool...)
	})
	for _, p := range pools {
		if p.Type == "VirtualApp" {
			if f := l.destroyVAppChildren(ctx, p); f != nil {
				return f
			}
		}
	}
	for _, v := range vms {
		t, err := object.NewVirtualMachine(l.client, v).Destroy(ctx)
		if err == nil {
			_, err = t.WaitForResult(ctx, nil)
		}
		if err != nil {
			return asFault(err)
		}
	}
	return nil
}

// sweepVApps forgets records of vApps that are gone and entityConfig entries of VMs that
// are gone.
func (l *lab) sweepVApps() {
	for ref := range l.vapps {
		if _, ok := vappByRef(types.ManagedObjectReference{Type: "VirtualApp", Value: ref}); !ok {
			delete(l.vapps, ref)
		}
	}
	for _, e := range simulator.Map.All("VirtualApp") {
		a, ok := e.(*simulator.VirtualApp)
		if !ok {
			continue
		}
		simulator.Map.WithLock(a, func() {
			if a.VAppConfig == nil {
				return
			}
			out := a.VAppConfig.EntityConfig[:0]
			for _, x := range a.VAppConfig.EntityConfig {
				if x.Key != nil && isChild(a, *x.Key) {
					out = append(out, x)
				}
			}
			a.VAppConfig.EntityConfig = out
		})
	}
}

// vappTask finishes an operation the lab ran (vApp power, FCD attach) as a simulator task,
// so clients wait on it like any other.
func vappTask(a types.ManagedObjectReference, name string, res types.AnyType, fault types.BaseMethodFault) types.ManagedObjectReference {
	task := simulator.CreateTask(a, name, func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		return res, fault
	})
	return task.Run()
}

// createdVApp replaces what vcsim kept of a CreateVApp spec with the whole spec.
// entityConfig entries can only name children, and a new vApp has none: they are ignored
// here (set them with UpdateVAppConfig once the children exist).
func (l *lab) createdVApp(ref types.ManagedObjectReference, spec *types.VAppConfigSpec) {
	a, ok := vappByRef(ref)
	if !ok {
		return
	}
	simulator.Map.WithLock(a, func() { a.VAppConfig = &types.VAppConfigInfo{} })
	rest := *spec
	rest.EntityConfig = nil
	if fault := l.configureVApp(ref, &rest); fault != nil {
		log.Printf("lab: vApp %s: configuration not applied: %s", ref.Value, faultMessage(fault))
	}
}
