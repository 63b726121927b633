package main

import (
	"context"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vslm"
)

// AttachDisk_Task and DetachDisk_Task (vcsim has neither): a first class disk becomes a VM
// disk whose backing is the disk's own descriptor and whose device carries `vDiskId`, as on
// vCenter; detaching removes the device and keeps the file.

// attachFCD adds first class disk req.DiskId to VM req.This.
func (l *lab) attachFCD(ctx context.Context, req *types.AttachDisk_Task) types.BaseMethodFault {
	obj, err := vslm.NewObjectManager(l.client).Retrieve(ctx, req.Datastore, req.DiskId.Id)
	if err != nil {
		return asFault(err)
	}
	b, ok := obj.Config.Backing.(*types.BaseConfigInfoDiskFileBackingInfo)
	if !ok {
		return &types.InvalidArgument{InvalidProperty: "diskId"}
	}
	vm, ok := simulator.Map.Get(req.This).(*simulator.VirtualMachine)
	if !ok {
		return &types.ManagedObjectNotFound{Obj: req.This}
	}
	var devices object.VirtualDeviceList
	simulator.Map.WithLock(vm, func() {
		if vm.Config != nil {
			devices = object.VirtualDeviceList(vm.Config.Hardware.Device)
		}
	})
	for _, d := range devices.SelectByType((*types.VirtualDisk)(nil)) {
		disk := d.(*types.VirtualDisk)
		if disk.VDiskId != nil && disk.VDiskId.Id == req.DiskId.Id {
			return &types.InvalidState{}
		}
	}
	ctrlKey := req.ControllerKey
	if ctrlKey == 0 {
		ctrl := devices.PickController((*types.VirtualSCSIController)(nil))
		if ctrl == nil {
			return &types.InvalidController{}
		}
		ctrlKey = ctrl.GetVirtualController().Key
	}
	ctrl, ok := devices.FindByKey(ctrlKey).(types.BaseVirtualController)
	if !ok {
		return &types.InvalidController{ControllerKey: ctrlKey}
	}
	unit := req.UnitNumber
	if unit == nil {
		used := map[int32]bool{7: true}
		for _, d := range devices {
			if v := d.GetVirtualDevice(); v.ControllerKey == ctrlKey && v.UnitNumber != nil {
				used[*v.UnitNumber] = true
			}
		}
		for u := int32(0); u < 16; u++ {
			if !used[u] {
				u := u
				unit = &u
				break
			}
		}
		if unit == nil {
			return &types.InvalidController{ControllerKey: ctrlKey}
		}
	}
	disk := &types.VirtualDisk{
		VirtualDevice: types.VirtualDevice{
			Key: -1, ControllerKey: ctrl.GetVirtualController().Key, UnitNumber: unit,
			Backing: &types.VirtualDiskFlatVer2BackingInfo{
				VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: b.FilePath, Datastore: &req.Datastore},
				DiskMode:                     string(types.VirtualDiskModePersistent),
				ThinProvisioned:              types.NewBool(true),
			},
		},
		CapacityInKB:    obj.Config.CapacityInMB * 1024,
		CapacityInBytes: obj.Config.CapacityInMB << 20,
		VDiskId:         &types.ID{Id: req.DiskId.Id},
	}
	// No fileOperation: the disk's file exists (object.AddDevice would ask for "create").
	spec := types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{
		&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: disk},
	}}
	task, err := object.NewVirtualMachine(l.client, req.This).Reconfigure(ctx, spec)
	if err == nil {
		_, err = task.WaitForResult(ctx, nil)
	}
	if err != nil {
		return asFault(err)
	}
	return nil
}

// detachFCD removes the VM disk that is first class disk req.DiskId, keeping its file.
func (l *lab) detachFCD(ctx context.Context, req *types.DetachDisk_Task) types.BaseMethodFault {
	vm, ok := simulator.Map.Get(req.This).(*simulator.VirtualMachine)
	if !ok {
		return &types.ManagedObjectNotFound{Obj: req.This}
	}
	var found types.BaseVirtualDevice
	simulator.Map.WithLock(vm, func() {
		if vm.Config == nil {
			return
		}
		for _, d := range vm.Config.Hardware.Device {
			if disk, ok := d.(*types.VirtualDisk); ok && disk.VDiskId != nil && disk.VDiskId.Id == req.DiskId.Id {
				found = d
			}
		}
	})
	if found == nil {
		return &types.NotFound{}
	}
	if err := object.NewVirtualMachine(l.client, req.This).RemoveDevice(ctx, true, found); err != nil {
		return asFault(err)
	}
	return nil
}
