package main

import (
	"context"
	"fmt"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// The admin side of vApps: create-vapp, vapp-info and vapp-power.

type createVAppRequest struct {
	Name      string   `json:"name"`
	Datastore string   `json:"datastore"`
	VMs       []vappVM `json:"vms"`
	PowerOn   bool     `json:"power_on"`
}

type vappVM struct {
	Name  string  `json:"name"`
	Disks []int64 `json:"disks"`
}

// createVAppAdmin makes a vApp with a product section, two properties and one child VM per
// entry; start order is the order of the entries (1, 2, 3, ...), with start delays of 10 s
// per position, powerOn/powerOff actions.
func (l *lab) createVAppAdmin(ctx context.Context, req *createVAppRequest) (interface{}, error) {
	if req.Name == "" {
		return nil, fmt.Errorf("a vApp name is required")
	}
	if _, err := findVApp(req.Name); err == nil {
		return nil, fmt.Errorf("a vApp named %q already exists", req.Name)
	}
	if len(req.VMs) == 0 {
		return nil, fmt.Errorf("a vApp needs at least one VM")
	}
	seen := map[string]bool{}
	for _, v := range req.VMs {
		if v.Name == "" || len(v.Disks) == 0 {
			return nil, fmt.Errorf("every VM needs a name and at least one disk")
		}
		if seen[v.Name] {
			return nil, fmt.Errorf("VM %q is named twice", v.Name)
		}
		seen[v.Name] = true
		if _, err := findVM(v.Name); err == nil {
			return nil, fmt.Errorf("a VM named %q already exists", v.Name)
		}
	}
	finder := find.NewFinder(l.client, false)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		return nil, err
	}
	finder.SetDatacenter(dc)
	folders, err := dc.Folders(ctx)
	if err != nil {
		return nil, err
	}
	pool, err := finder.DefaultResourcePool(ctx)
	if err != nil {
		return nil, err
	}
	spec := types.VAppConfigSpec{
		Annotation: "created by safekeeping-lab",
		VmConfigSpec: types.VmConfigSpec{
			Product: []types.VAppProductSpec{{
				ArrayUpdateSpec: types.ArrayUpdateSpec{Operation: types.ArrayUpdateOperationAdd},
				Info: &types.VAppProductInfo{Key: 0, Name: req.Name, Vendor: "safekeeping lab", Version: "1.0",
					FullVersion: "1.0.0", VendorUrl: "https://example.com/safekeeping"},
			}},
			Property: []types.VAppPropertySpec{
				{ArrayUpdateSpec: types.ArrayUpdateSpec{Operation: types.ArrayUpdateOperationAdd},
					Info: &types.VAppPropertyInfo{Key: 0, Id: "lab.name", Label: "Name", Type: "string",
						UserConfigurable: types.NewBool(true), DefaultValue: req.Name, Value: req.Name}},
				{ArrayUpdateSpec: types.ArrayUpdateSpec{Operation: types.ArrayUpdateOperationAdd},
					Info: &types.VAppPropertyInfo{Key: 1, Id: "lab.port", Label: "Port", Type: "int",
						UserConfigurable: types.NewBool(true), DefaultValue: "8080", Value: "8443"}},
			},
		},
	}
	va, err := pool.CreateVApp(ctx, req.Name, types.DefaultResourceConfigSpec(), spec, folders.VmFolder)
	if err != nil {
		return nil, fmt.Errorf("CreateVApp: %v", err)
	}
	ref := types.ManagedObjectReference{Type: "VirtualApp", Value: va.Reference().Value}
	l.createdVApp(ref, &spec)
	var entities []types.VAppEntityConfigInfo
	var children []map[string]string
	for i, v := range req.VMs {
		off := false
		vm := &createVMRequest{Name: v.Name, Disks: v.Disks, Datastore: req.Datastore, PowerOn: &off, vapp: &ref}
		res, err := l.createVM(ctx, vm)
		if err != nil {
			return nil, fmt.Errorf("VM %s: %v", v.Name, err)
		}
		moref := res.(map[string]string)["moref"]
		vmRef := types.ManagedObjectReference{Type: "VirtualMachine", Value: moref}
		entities = append(entities, types.VAppEntityConfigInfo{
			Key: &vmRef, Tag: v.Name, StartOrder: int32(i + 1), StartDelay: int32(10 * (i + 1)),
			WaitingForGuest: types.NewBool(false), StartAction: "powerOn",
			StopDelay: int32(5 * (i + 1)), StopAction: "powerOff", DestroyWithParent: types.NewBool(true),
		})
		children = append(children, map[string]string{"name": v.Name, "moref": moref})
	}
	if fault := l.configureVApp(ref, &types.VAppConfigSpec{EntityConfig: entities}); fault != nil {
		return nil, fmt.Errorf("UpdateVAppConfig: %s", faultMessage(fault))
	}
	if req.PowerOn {
		if _, fault := l.powerVApp(ctx, ref, true, false); fault != nil {
			return nil, fmt.Errorf("PowerOnVApp: %s", faultMessage(fault))
		}
	}
	return map[string]interface{}{"moref": ref.Value, "name": req.Name, "vms": children}, nil
}

type vappInfoChild struct {
	Name        string `json:"name"`
	Moref       string `json:"moref"`
	Type        string `json:"type"`
	PowerState  string `json:"power_state,omitempty"`
	StartOrder  int32  `json:"start_order"`
	StartDelay  int32  `json:"start_delay"`
	StartAction string `json:"start_action"`
	StopDelay   int32  `json:"stop_delay"`
	StopAction  string `json:"stop_action"`
	Tag         string `json:"tag,omitempty"`
}

// vappInfo describes a vApp: children in start order with their entity settings, products,
// properties and the VMs the last power operations touched, in order.
func (l *lab) vappInfo(name string) (interface{}, error) {
	a, err := findVApp(name)
	if err != nil {
		return nil, err
	}
	var vappName, parent, annotation string
	var products []types.VAppProductInfo
	var props []types.VAppPropertyInfo
	simulator.Map.WithLock(a, func() {
		vappName = a.Name
		if a.Parent != nil {
			parent = a.Parent.Value
		}
		if a.VAppConfig != nil {
			annotation = a.VAppConfig.Annotation
			products = append(products, a.VAppConfig.Product...)
			props = append(props, a.VAppConfig.Property...)
		}
	})
	var children []vappInfoChild
	for _, e := range startSequence(a) {
		c := vappInfoChild{Moref: e.Key.Value, Type: e.Key.Type, StartOrder: e.StartOrder, StartDelay: e.StartDelay,
			StartAction: e.StartAction, StopDelay: e.StopDelay, StopAction: e.StopAction, Tag: e.Tag}
		if vm, ok := simulator.Map.Get(*e.Key).(*simulator.VirtualMachine); ok {
			simulator.Map.WithLock(vm, func() {
				c.Name = vm.Name
				c.PowerState = string(vm.Runtime.PowerState)
			})
		} else if sub, ok := vappByRef(*e.Key); ok {
			c.Name = sub.Name
		}
		children = append(children, c)
	}
	var productOut []map[string]string
	for _, p := range products {
		productOut = append(productOut, map[string]string{"name": p.Name, "vendor": p.Vendor, "version": p.Version})
	}
	var propOut []map[string]interface{}
	for _, p := range props {
		propOut = append(propOut, map[string]interface{}{"key": p.Key, "id": p.Id, "type": p.Type, "value": p.Value, "default_value": p.DefaultValue})
	}
	rec := l.vappRecord(a.Self.Value)
	return map[string]interface{}{
		"moref": a.Self.Value, "name": vappName, "parent": parent, "annotation": annotation,
		"children": children, "products": productOut, "properties": propOut,
		"last_power_on": rec.LastPowerOn, "last_power_off": rec.LastPowerOff,
	}, nil
}

type vappPowerRequest struct {
	VApp  string `json:"vapp"`
	State string `json:"state"`
}

func (l *lab) vappPower(ctx context.Context, req *vappPowerRequest) (interface{}, error) {
	a, err := findVApp(req.VApp)
	if err != nil {
		return nil, err
	}
	ref := types.ManagedObjectReference{Type: "VirtualApp", Value: a.Self.Value}
	var order []string
	var fault types.BaseMethodFault
	switch req.State {
	case "on":
		order, fault = l.powerVApp(ctx, ref, true, false)
	case "off":
		order, fault = l.powerVApp(ctx, ref, false, false)
	default:
		return nil, fmt.Errorf("power state must be on or off, not %q", req.State)
	}
	if fault != nil {
		return nil, fmt.Errorf("%s", faultMessage(fault))
	}
	return map[string]interface{}{"moref": ref.Value, "state": req.State, "order": order}, nil
}
