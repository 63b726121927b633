package main

import (
	"fmt"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

type vmInfoDisk struct {
	Index         int    `json:"index"`
	Key           int32  `json:"key"`
	Path          string `json:"path"`
	Datastore     string `json:"datastore"`
	LocalPath     string `json:"local_path"`
	FlatPath      string `json:"flat_path"`
	Capacity      int64  `json:"capacity"`
	Controller    string `json:"controller"`
	ControllerKey int32  `json:"controller_key"`
	Bus           int32  `json:"bus"`
	Unit          int32  `json:"unit"`
	UUID          string `json:"uuid"`
	ChangeID      string `json:"change_id"`
}

type vmInfoNic struct {
	Key         int32  `json:"key"`
	Type        string `json:"type"`
	Network     string `json:"network"`
	MAC         string `json:"mac"`
	AddressType string `json:"address_type"`
}

type vmInfoSnapshot struct {
	Moref    string   `json:"moref"`
	Name     string   `json:"name"`
	ID       int32    `json:"id"`
	Parent   string   `json:"parent,omitempty"`
	Quiesced bool     `json:"quiesced"`
	Disks    []string `json:"disks"`
}

type vmInfo struct {
	Moref           string           `json:"moref"`
	Name            string           `json:"name"`
	UUID            string           `json:"uuid"`
	InstanceUUID    string           `json:"instance_uuid"`
	PowerState      string           `json:"power_state"`
	VmxPath         string           `json:"vmx_path"`
	GuestID         string           `json:"guest_id"`
	Firmware        string           `json:"firmware"`
	CPUs            int32            `json:"cpus"`
	MemoryMB        int32            `json:"memory_mb"`
	CBT             bool             `json:"change_tracking"`
	Disks           []vmInfoDisk     `json:"disks"`
	Nics            []vmInfoNic      `json:"nics"`
	Snapshots       []vmInfoSnapshot `json:"snapshots"`
	CurrentSnapshot string           `json:"current_snapshot,omitempty"`
}

func (l *lab) vmInfo(name string) (interface{}, error) {
	vm, err := findVM(name)
	if err != nil {
		return nil, err
	}
	var info vmInfo
	var lerr error
	simulator.Map.WithLock(vm, func() {
		c := vm.Config
		if c == nil {
			lerr = fmt.Errorf("VM %s has no configuration", name)
			return
		}
		info = vmInfo{
			Moref: vm.Self.Value, Name: vm.Name, UUID: c.Uuid, InstanceUUID: c.InstanceUuid,
			PowerState: string(vm.Runtime.PowerState), VmxPath: c.Files.VmPathName,
			GuestID: c.GuestId, Firmware: c.Firmware, CPUs: c.Hardware.NumCPU, MemoryMB: c.Hardware.MemoryMB,
			CBT: c.ChangeTrackingEnabled != nil && *c.ChangeTrackingEnabled,
		}
		devices := object.VirtualDeviceList(c.Hardware.Device)
		idx := 0
		ordered := append(orderedDisks(devices), devices.SelectByType((*types.VirtualEthernetCard)(nil))...)
		for _, dev := range ordered {
			switch x := dev.(type) {
			case *types.VirtualDisk:
				b, ok := x.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
				if !ok {
					continue
				}
				ctrl := devices.FindByKey(x.ControllerKey)
				_, kind := controllerPrefix(ctrl)
				var bus int32
				if vc, ok := ctrl.(types.BaseVirtualController); ok {
					bus = vc.GetVirtualController().BusNumber
				}
				var p object.DatastorePath
				p.FromString(b.FileName)
				d := vmInfoDisk{Index: idx, Key: x.Key, Path: b.FileName, Datastore: p.Datastore, Capacity: diskCapacity(x),
					Controller: kind, ControllerKey: x.ControllerKey, Bus: bus, UUID: b.Uuid, ChangeID: b.ChangeId}
				if x.UnitNumber != nil {
					d.Unit = *x.UnitNumber
				}
				if local, err := l.localPath(b.FileName); err == nil {
					d.LocalPath = local
					if desc, err := readDescriptorFile(local); err == nil {
						d.FlatPath, _ = flatPath(local, desc)
					}
				}
				info.Disks = append(info.Disks, d)
				idx++
			case types.BaseVirtualEthernetCard:
				card := x.GetVirtualEthernetCard()
				n := vmInfoNic{Key: card.Key, Type: nicVirtualDev(dev), MAC: card.MacAddress, AddressType: card.AddressType}
				switch b := card.Backing.(type) {
				case *types.VirtualEthernetCardNetworkBackingInfo:
					n.Network = b.DeviceName
				case *types.VirtualEthernetCardDistributedVirtualPortBackingInfo:
					n.Network = dvPortgroupName(b.Port.PortgroupKey)
				}
				info.Nics = append(info.Nics, n)
			}
		}
		if vm.Snapshot != nil {
			if vm.Snapshot.CurrentSnapshot != nil {
				info.CurrentSnapshot = vm.Snapshot.CurrentSnapshot.Value
			}
			var walk func([]types.VirtualMachineSnapshotTree, string)
			walk = func(list []types.VirtualMachineSnapshotTree, parent string) {
				for _, t := range list {
					s := vmInfoSnapshot{Moref: t.Snapshot.Value, Name: t.Name, ID: t.Id, Parent: parent, Quiesced: t.Quiesced}
					if st := l.snaps[t.Snapshot.Value]; st != nil {
						for _, fd := range st.disks {
							s.Disks = append(s.Disks, fd.path)
						}
					}
					info.Snapshots = append(info.Snapshots, s)
					walk(t.ChildSnapshotList, t.Snapshot.Value)
				}
			}
			walk(vm.Snapshot.RootSnapshotList, "")
		}
	})
	if lerr != nil {
		return nil, lerr
	}
	return info, nil
}
