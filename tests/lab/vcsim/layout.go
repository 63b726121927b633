package main

import (
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// syncLayout rebuilds a VM's layoutEx from the files the lab keeps for it, as ESXi reports
// them: the .vmx and .nvram, each disk's chain (one unit of descriptor and extent per
// file, base first), each snapshot's data file (.vmsn, when there is one) and the chains
// of the disks it froze.
// vcsim's own layoutEx keeps the names disks had at creation and lists the .vmx, .nvram
// and log without the VM's folder.
func (l *lab) syncLayout(vm *simulator.VirtualMachine) {
	type snapView struct {
		ref      types.ManagedObjectReference
		dataFile string
	}
	var vmxPath, name string
	var disks []diskView
	var snaps []snapView
	simulator.Map.WithLock(vm, func() {
		if vm.Config == nil || vm.LayoutEx == nil {
			return
		}
		vmxPath = vm.Config.Files.VmPathName
		name = vm.Name
		disks = vmDisks(vm)
		old := map[int32]string{}
		for _, f := range vm.LayoutEx.File {
			old[f.Key] = f.Name
		}
		oldData := map[types.ManagedObjectReference]string{}
		for _, s := range vm.LayoutEx.Snapshot {
			oldData[s.Key] = old[s.DataKey]
		}
		if vm.Snapshot == nil {
			return
		}
		var walk func([]types.VirtualMachineSnapshotTree)
		walk = func(list []types.VirtualMachineSnapshotTree) {
			for _, t := range list {
				snaps = append(snaps, snapView{ref: t.Snapshot, dataFile: oldData[t.Snapshot]})
				walk(t.ChildSnapshotList)
			}
		}
		walk(vm.Snapshot.RootSnapshotList)
	})
	if vmxPath == "" {
		return
	}
	vmxLocal, err := l.localPath(vmxPath)
	if err != nil {
		return
	}
	var files []types.VirtualMachineFileLayoutExFileInfo
	// add lists an existing file once and returns its key (-1 when it does not exist).
	add := func(dsPath, kind string) int32 {
		for _, f := range files {
			if f.Name == dsPath {
				return f.Key
			}
		}
		local, err := l.localPath(dsPath)
		if err != nil {
			return -1
		}
		st, err := os.Stat(local)
		if err != nil {
			return -1
		}
		key := int32(len(files))
		files = append(files, types.VirtualMachineFileLayoutExFileInfo{
			Key: key, Name: dsPath, Type: kind, Size: st.Size(), UniqueSize: st.Size(),
			Accessible: types.NewBool(true),
		})
		return key
	}
	// diskChain lists a disk's chain as ESXi does: one unit (descriptor and extent) per
	// file, the base first, the disk itself last.
	diskChain := func(desc string) []types.VirtualMachineFileLayoutExDiskUnit {
		files, err := l.chainOf(desc)
		if err != nil {
			files = []string{desc}
		}
		var units []types.VirtualMachineFileLayoutExDiskUnit
		for i := len(files) - 1; i >= 0; i-- {
			f := files[i]
			var keys []int32
			if k := add(f, string(types.VirtualMachineFileLayoutExFileTypeDiskDescriptor)); k >= 0 {
				keys = append(keys, k)
			}
			if local, err := l.localPath(f); err == nil {
				if d, err := readDescriptorFile(local); err == nil {
					if flat, err := flatPath(local, d); err == nil && filepath.Dir(flat) == filepath.Dir(local) {
						extent := path.Join(path.Dir(f), filepath.Base(flat))
						if k := add(extent, string(types.VirtualMachineFileLayoutExFileTypeDiskExtent)); k >= 0 {
							keys = append(keys, k)
						}
					}
				}
			}
			if len(keys) > 0 {
				units = append(units, types.VirtualMachineFileLayoutExDiskUnit{FileKey: keys})
			}
		}
		return units
	}
	add(vmxPath, string(types.VirtualMachineFileLayoutExFileTypeConfig))
	folder := path.Dir(vmxPath)
	if _, err := os.Stat(filepath.Join(filepath.Dir(vmxLocal), name+".nvram")); err == nil {
		add(path.Join(folder, name+".nvram"), string(types.VirtualMachineFileLayoutExFileTypeNvram))
	}
	var diskLayouts []types.VirtualMachineFileLayoutExDiskLayout
	for _, d := range disks {
		diskLayouts = append(diskLayouts, types.VirtualMachineFileLayoutExDiskLayout{Key: d.key, Chain: diskChain(d.fileName)})
	}
	var snapLayouts []types.VirtualMachineFileLayoutExSnapshotLayout
	for _, s := range snaps {
		// -1: no such file. (vcsim deletes the files under dataKey and memoryKey when the
		// snapshot is removed; a zero would name the .vmx.)
		layout := types.VirtualMachineFileLayoutExSnapshotLayout{Key: s.ref, DataKey: -1, MemoryKey: -1}
		if s.dataFile != "" {
			layout.DataKey = add(s.dataFile, string(types.VirtualMachineFileLayoutExFileTypeSnapshotData))
		}
		if st := l.snaps[s.ref.Value]; st != nil {
			for key, fd := range st.disks {
				layout.Disk = append(layout.Disk, types.VirtualMachineFileLayoutExDiskLayout{Key: key, Chain: diskChain(fd.path)})
			}
		}
		sortDiskLayouts(layout.Disk)
		snapLayouts = append(snapLayouts, layout)
	}
	simulator.Map.WithLock(vm, func() {
		if vm.LayoutEx == nil {
			return
		}
		vm.LayoutEx.File = files
		vm.LayoutEx.Disk = diskLayouts
		vm.LayoutEx.Snapshot = snapLayouts
		vm.LayoutEx.Timestamp = time.Now()
	})
}

func sortDiskLayouts(d []types.VirtualMachineFileLayoutExDiskLayout) {
	for i := 1; i < len(d); i++ {
		for j := i; j > 0 && d[j].Key < d[j-1].Key; j-- {
			d[j], d[j-1] = d[j-1], d[j]
		}
	}
}
