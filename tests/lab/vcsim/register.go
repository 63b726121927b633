package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/task"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// asFault turns an error from an in-process govmomi call into a vSphere fault.
func asFault(err error) types.BaseMethodFault {
	var te task.Error
	if errors.As(err, &te) && te.Fault() != nil {
		return te.Fault()
	}
	if soap.IsSoapFault(err) {
		if f, ok := soap.ToSoapFault(err).VimFault().(types.BaseMethodFault); ok {
			return f
		}
	}
	if soap.IsVimFault(err) {
		if f, ok := soap.ToVimFault(err).(types.BaseMethodFault); ok {
			return f
		}
	}
	return &types.SystemError{Reason: err.Error()}
}

// registerVM does what ESXi does for RegisterVM_Task: it reads the .vmx and builds the VM
// from it (CPUs, memory, guest, firmware, uuids, controllers, disks, NICs). The answer is
// a task, failed with the fault when the .vmx cannot be used.
func (l *lab) registerVM(ctx context.Context, req *types.RegisterVM_Task) types.ManagedObjectReference {
	folder := simulator.Map.Get(req.This)
	if folder == nil {
		folder = simulator.Map.Any("Folder")
	}
	t := simulator.CreateTask(folder, "registerVm", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		ref, fault := l.registerFromVMX(ctx, req)
		if fault != nil {
			return nil, fault
		}
		return ref, nil
	})
	return t.Run()
}

func (l *lab) registerFromVMX(ctx context.Context, req *types.RegisterVM_Task) (types.ManagedObjectReference, types.BaseMethodFault) {
	var none types.ManagedObjectReference
	if f, _ := checkDatastorePath(req.Path); f != nil {
		return none, f
	}
	local, err := l.localPath(req.Path)
	if err != nil {
		return none, &types.InvalidDatastorePath{DatastorePath: req.Path}
	}
	vmx, err := readVMXFile(local)
	if err != nil {
		if os.IsNotExist(err) {
			return none, &types.NotFound{}
		}
		return none, &types.InvalidArgument{InvalidProperty: "path"}
	}
	name := req.Name
	if name == "" {
		name = vmx["displayname"]
	}
	if name == "" {
		return none, &types.InvalidArgument{InvalidProperty: "name"}
	}
	spec, fault := l.specFromVMX(ctx, req.Path, vmx)
	if fault != nil {
		return none, fault
	}
	// vcsim opens <name>.nvram and vmware.log when registering; ESXi creates them if missing.
	vmDir := filepath.Dir(local)
	for _, f := range []string{name + ".nvram", "vmware.log"} {
		p := filepath.Join(vmDir, f)
		if _, err := os.Stat(p); os.IsNotExist(err) {
			if src := vmx["nvram"]; f == name+".nvram" && src != "" && src != f {
				if data, err := os.ReadFile(filepath.Join(vmDir, filepath.Base(src))); err == nil {
					_ = writeFileAtomic(p, data, 0o644)
					continue
				}
			}
			fh, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return none, &types.CannotCreateFile{FileFault: types.FileFault{File: p}}
			}
			fh.Close()
		}
	}
	pool := req.Pool
	if pool == nil && !req.AsTemplate {
		finder := find.NewFinder(l.client, false)
		dc, err := finder.DefaultDatacenter(ctx)
		if err != nil {
			return none, asFault(err)
		}
		finder.SetDatacenter(dc)
		rp, err := finder.DefaultResourcePool(ctx)
		if err != nil {
			return none, asFault(err)
		}
		r := rp.Reference()
		pool = &r
	}
	var poolObj *object.ResourcePool
	if pool != nil {
		poolObj = object.NewResourcePool(l.client, *pool)
	}
	var hostObj *object.HostSystem
	if req.Host != nil {
		hostObj = object.NewHostSystem(l.client, *req.Host)
	}
	f := object.NewFolder(l.client, req.This)
	rt, err := f.RegisterVM(ctx, req.Path, name, req.AsTemplate, poolObj, hostObj)
	if err != nil {
		return none, asFault(err)
	}
	res, err := rt.WaitForResult(ctx, nil)
	if err != nil {
		return none, asFault(err)
	}
	vmRef, ok := res.Result.(types.ManagedObjectReference)
	if !ok {
		return none, &types.SystemError{Reason: "RegisterVM returned no VM"}
	}
	vm := object.NewVirtualMachine(l.client, vmRef)
	ct, err := vm.Reconfigure(ctx, *spec)
	if err == nil {
		_, err = ct.WaitForResult(ctx, nil)
	}
	if err != nil {
		// Leave nothing half-registered behind.
		_ = vm.Unregister(ctx)
		return none, asFault(err)
	}
	return vmRef, nil
}

func vmxBool(v string) bool {
	switch strings.ToLower(v) {
	case "true", "yes", "1":
		return true
	}
	return false
}

// dsPathFromVMX turns a .vmx file name (relative, or /vmfs/volumes/<ds>/...) into a
// datastore path.
func dsPathFromVMX(vmxPath, name string) string {
	if strings.HasPrefix(name, "/vmfs/volumes/") {
		rest := strings.TrimPrefix(name, "/vmfs/volumes/")
		i := strings.IndexByte(rest, '/')
		if i < 0 {
			return ""
		}
		return fmt.Sprintf("[%s] %s", rest[:i], rest[i+1:])
	}
	var p object.DatastorePath
	p.FromString(vmxPath)
	p.Path = path.Join(path.Dir(p.Path), name)
	return p.String()
}

// specFromVMX builds the configuration ESXi would read from a .vmx.
func (l *lab) specFromVMX(ctx context.Context, vmxPath string, vmx map[string]string) (*types.VirtualMachineConfigSpec, types.BaseMethodFault) {
	spec := &types.VirtualMachineConfigSpec{}
	if v, err := strconv.Atoi(vmx["numvcpus"]); err == nil {
		spec.NumCPUs = int32(v)
	}
	if v, err := strconv.Atoi(vmx["cpuid.corespersocket"]); err == nil {
		spec.NumCoresPerSocket = int32(v)
	}
	if v, err := strconv.Atoi(vmx["memsize"]); err == nil {
		spec.MemoryMB = int64(v)
	}
	if g := vmx["guestos"]; g != "" {
		spec.GuestId = guestIDFromVMX(g)
	}
	spec.Firmware = vmx["firmware"]
	if s, ok := canonicalFromSpaced(vmx["uuid.bios"]); ok {
		spec.Uuid = s
	}
	if s, ok := canonicalFromSpaced(vmx["vc.uuid"]); ok {
		spec.InstanceUuid = s
	}
	spec.Annotation = vmx["annotation"]
	if v := vmx["virtualhw.version"]; v != "" {
		spec.Version = "vmx-" + v
	}
	spec.ChangeTrackingEnabled = types.NewBool(vmxBool(vmx["ctkenabled"]))

	var changes []types.BaseVirtualDeviceConfigSpec
	add := func(d types.BaseVirtualDevice) {
		changes = append(changes, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: d})
	}
	controllerKeys := map[string]int32{}
	for bus := 0; bus < 4; bus++ {
		prefix := fmt.Sprintf("scsi%d", bus)
		if !vmxBool(vmx[prefix+".present"]) {
			continue
		}
		key := int32(-1000 - bus)
		base := types.VirtualSCSIController{
			VirtualController: types.VirtualController{VirtualDevice: types.VirtualDevice{Key: key}, BusNumber: int32(bus)},
			SharedBus:         types.VirtualSCSISharingNoSharing,
		}
		switch vmx[prefix+".virtualdev"] {
		case "pvscsi":
			add(&types.ParaVirtualSCSIController{VirtualSCSIController: base})
		case "lsisas1068":
			add(&types.VirtualLsiLogicSASController{VirtualSCSIController: base})
		case "buslogic":
			add(&types.VirtualBusLogicController{VirtualSCSIController: base})
		default:
			add(&types.VirtualLsiLogicController{VirtualSCSIController: base})
		}
		controllerKeys[prefix] = key
	}
	for bus := 0; bus < 2; bus++ {
		controllerKeys[fmt.Sprintf("ide%d", bus)] = int32(200 + bus)
	}
	for _, k := range sortedKeys(vmx, "") {
		if !strings.HasSuffix(k, ".filename") {
			continue
		}
		slot := strings.TrimSuffix(k, ".filename")
		i := strings.IndexByte(slot, ':')
		if i < 0 {
			continue
		}
		ckey, ok := controllerKeys[slot[:i]]
		if !ok || vmx[slot+".present"] != "" && !vmxBool(vmx[slot+".present"]) {
			continue
		}
		unit, err := strconv.Atoi(slot[i+1:])
		if err != nil {
			continue
		}
		dt := vmx[slot+".devicetype"]
		if strings.Contains(dt, "cdrom") {
			continue
		}
		dsPath := dsPathFromVMX(vmxPath, vmx[k])
		if f, msg := checkDatastorePath(dsPath); f != nil || dsPath == "" {
			_ = msg
			return nil, &types.FileNotFound{FileFault: types.FileFault{File: vmx[k]}}
		}
		local, err := l.localPath(dsPath)
		if err != nil {
			return nil, &types.FileNotFound{FileFault: types.FileFault{File: dsPath}}
		}
		desc, err := readDescriptorFile(local)
		if err != nil {
			if os.IsNotExist(err) {
				return nil, &types.FileNotFound{FileFault: types.FileFault{File: dsPath}}
			}
			return nil, &types.InvalidDiskFormat{}
		}
		mode := string(types.VirtualDiskModePersistent)
		if m := vmx[slot+".mode"]; m != "" {
			mode = strings.ReplaceAll(m, "-", "_")
		}
		u := int32(unit)
		capacity := desc.Capacity()
		add(&types.VirtualDisk{
			VirtualDevice: types.VirtualDevice{
				Key:           int32(-2000 - len(changes)),
				ControllerKey: ckey,
				UnitNumber:    &u,
				Backing: &types.VirtualDiskFlatVer2BackingInfo{
					VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: dsPath},
					DiskMode:                     mode,
					ThinProvisioned:              types.NewBool(true),
				},
			},
			CapacityInBytes: capacity,
			CapacityInKB:    capacity / 1024,
		})
	}
	for n := 0; n < 10; n++ {
		p := fmt.Sprintf("ethernet%d", n)
		if !vmxBool(vmx[p+".present"]) {
			continue
		}
		backing, fault := l.nicBackingFromVMX(ctx, vmx, p)
		if fault != nil {
			return nil, fault
		}
		kind := vmx[p+".virtualdev"]
		if kind == "vlance" {
			kind = "pcnet32"
		}
		if kind == "" {
			kind = "e1000"
		}
		dev, err := object.EthernetCardTypes().CreateEthernetCard(kind, backing)
		if err != nil {
			return nil, &types.InvalidArgument{InvalidProperty: p + ".virtualDev"}
		}
		card := dev.(types.BaseVirtualEthernetCard).GetVirtualEthernetCard()
		card.Key = int32(-3000 - n)
		switch vmx[p+".addresstype"] {
		case "static":
			card.AddressType = string(types.VirtualEthernetCardMacTypeManual)
			card.MacAddress = vmx[p+".address"]
		case "vpx":
			card.AddressType = string(types.VirtualEthernetCardMacTypeAssigned)
			card.MacAddress = vmx[p+".generatedaddress"]
		default:
			card.AddressType = string(types.VirtualEthernetCardMacTypeGenerated)
			card.MacAddress = vmx[p+".generatedaddress"]
		}
		start := vmx[p+".startconnected"] == "" || vmxBool(vmx[p+".startconnected"])
		card.Connectable = &types.VirtualDeviceConnectInfo{StartConnected: start, Connected: start, AllowGuestControl: true}
		add(dev)
	}
	spec.DeviceChange = changes
	return spec, nil
}

func (l *lab) nicBackingFromVMX(ctx context.Context, vmx map[string]string, p string) (types.BaseVirtualDeviceBackingInfo, types.BaseMethodFault) {
	finder := find.NewFinder(l.client, false)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		return nil, asFault(err)
	}
	finder.SetDatacenter(dc)
	if pgKey := vmx[p+".dvs.portgroupid"]; pgKey != "" {
		name := dvPortgroupName(pgKey)
		if name == "" {
			return nil, &types.NotFound{}
		}
		pg := object.NewDistributedVirtualPortgroup(l.client, types.ManagedObjectReference{Type: "DistributedVirtualPortgroup", Value: pgKey})
		b, err := pg.EthernetCardBackingInfo(ctx)
		if err != nil {
			return nil, asFault(err)
		}
		return b, nil
	}
	name := vmx[p+".networkname"]
	net, err := finder.Network(ctx, name)
	if err != nil {
		return nil, &types.NotFound{}
	}
	b, err := net.EthernetCardBackingInfo(ctx)
	if err != nil {
		return nil, asFault(err)
	}
	return b, nil
}
