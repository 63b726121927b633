package main

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"
)

// createSnapshot passes CreateSnapshot_Task to vcsim and then freezes the VM's disks as
// ESXi does: each disk gets an empty delta child (chain.go), the VM's disk now points at
// the delta, the snapshot's config keeps pointing at the disk it froze, and change
// tracking starts a new sequence number. Nothing is copied, so the time this takes does
// not depend on the disks' size. Called with l.mu held, so no guest write can land
// between the snapshot and the switch to the delta.
func (l *lab) createSnapshot(w http.ResponseWriter, r *http.Request, body []byte, req *types.CreateSnapshot_Task) {
	l.syncAll()
	if req.Quiesce && l.knobs.FailQuiescedSnapshots {
		vm := simulator.Map.Get(req.This)
		if vm == nil {
			l.pass(w, r, body)
			return
		}
		task := simulator.CreateTask(vm, "createSnapshot", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
			return nil, &types.ApplicationQuiesceFault{}
		})
		writeResponse(w, "CreateSnapshot_TaskResponse", &types.CreateSnapshot_TaskResponse{Returnval: task.Run()})
		return
	}
	rec := l.passRecorded(r, body)
	res, succeeded := taskResult(rec)
	snapRef, _ := res.(types.ManagedObjectReference)
	if succeeded {
		if err := l.freeze(req.This, snapRef); err != nil {
			// A snapshot whose disks are not frozen would silently be a live view: remove
			// it and fail the task instead.
			log.Printf("lab: freezing %s of %s: %v", snapRef.Value, req.This.Value, err)
			l.failSnapshotTask(r.Context(), rec, snapRef, err)
		}
	}
	copyRecorded(w, rec)
}

func (l *lab) freeze(vmRef, snapRef types.ManagedObjectReference) error {
	vm, ok := simulator.Map.Get(vmRef).(*simulator.VirtualMachine)
	if !ok {
		return fmt.Errorf("vm %s not found", vmRef.Value)
	}
	snap, ok := simulator.Map.Get(snapRef).(*simulator.VirtualMachineSnapshot)
	if !ok {
		return fmt.Errorf("snapshot %s not found", snapRef.Value)
	}
	var disks []diskView
	independent := map[int32]bool{}
	simulator.Map.WithLock(vm, func() {
		disks = vmDisks(vm)
		independent = independentDisks(vm)
	})
	state := &snapState{vm: vmRef, disks: map[int32]*frozenDisk{}}
	deltas := map[int32]string{}
	for _, d := range disks {
		if independent[d.key] {
			// Snapshots leave independent disks alone, as on ESXi: no delta, the VM keeps
			// writing to the disk itself.
			continue
		}
		st := l.disks[d.fileName]
		if st == nil {
			l.dropDeltas(deltas)
			return fmt.Errorf("disk %s has no lab record", d.fileName)
		}
		delta, err := l.addDelta(d.fileName)
		if err != nil {
			l.dropDeltas(deltas)
			return err
		}
		deltas[d.key] = delta
		fd := &frozenDisk{path: d.fileName, source: d.fileName, capacity: st.capacity, epoch: st.epoch, seq: st.seq}
		if st.epoch != "" {
			fd.stamps = make(map[int64]uint64, len(st.stamps))
			for k, v := range st.stamps {
				fd.stamps[k] = v
			}
			st.seq++
		}
		state.disks[d.key] = fd
	}
	simulator.Map.WithLock(snap, func() {
		devices := make([]types.BaseVirtualDevice, 0, len(snap.Config.Hardware.Device))
		for _, dev := range snap.Config.Hardware.Device {
			disk, ok := dev.(*types.VirtualDisk)
			if !ok || state.disks[disk.Key] == nil {
				devices = append(devices, dev)
				continue
			}
			fd := state.disks[disk.Key]
			if fd == nil {
				devices = append(devices, dev)
				continue
			}
			b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
			if !ok {
				devices = append(devices, dev)
				continue
			}
			copyDisk := *disk
			copyBacking := *b
			copyBacking.FileName = fd.path
			copyBacking.ChangeId = ""
			if fd.epoch != "" {
				copyBacking.ChangeId = fmt.Sprintf("%s/%d", fd.epoch, fd.seq)
			}
			copyDisk.Backing = &copyBacking
			devices = append(devices, &copyDisk)
		}
		snap.Config.Hardware.Device = devices
	})
	// The VM's disks now write to their deltas; the lab's records follow the current file.
	l.repointDisks(vm, deltas)
	l.snaps[snapRef.Value] = state
	l.syncVM(vm)
	return nil
}

// independentDisks lists the device keys of a VM's independent disks. Call with the VM
// locked.
func independentDisks(vm *simulator.VirtualMachine) map[int32]bool {
	out := map[int32]bool{}
	if vm.Config == nil {
		return out
	}
	for _, dev := range vm.Config.Hardware.Device {
		d, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		if b, ok := d.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok && strings.HasPrefix(b.DiskMode, "independent") {
			out[d.Key] = true
		}
	}
	return out
}

// freezeDisk copies a disk's flat extent and writes a descriptor for the copy; it returns
// the copy's datastore path. First class disk snapshots (fcd.go) still freeze this way:
// they have no VM whose backing could move to a delta.
func (l *lab) freezeDisk(dsPath, suffix string) (string, error) {
	local, err := l.localPath(dsPath)
	if err != nil {
		return "", err
	}
	desc, err := readDescriptorFile(local)
	if err != nil {
		return "", err
	}
	flat, err := flatPath(local, desc)
	if err != nil {
		return "", err
	}
	base := strings.TrimSuffix(filepath.Base(local), ".vmdk") + "-" + suffix
	frozenDesc := filepath.Join(filepath.Dir(local), base+".vmdk")
	frozenFlat := filepath.Join(filepath.Dir(local), base+"-flat.vmdk")
	_ = removeIfExists(frozenFlat)
	if err := copySparse(flat, frozenFlat); err != nil {
		return "", fmt.Errorf("copying %s: %w", flat, err)
	}
	adapter := desc.AdapterType
	if adapter == "" {
		adapter = "lsilogic"
	}
	if err := writeFileAtomic(frozenDesc, renderDescriptor(desc.Capacity(), base+"-flat.vmdk", desc.UUID, adapter), 0o600); err != nil {
		return "", err
	}
	var p object.DatastorePath
	p.FromString(dsPath)
	p.Path = path.Join(path.Dir(p.Path), base+".vmdk")
	return p.String(), nil
}

// queryChangedDiskAreas answers QueryChangedDiskAreas from the lab's change log. The
// returned string is the fault message.
func (l *lab) queryChangedDiskAreas(req *types.QueryChangedDiskAreas) (*types.DiskChangeInfo, types.BaseMethodFault, string) {
	vm, ok := simulator.Map.Get(req.This).(*simulator.VirtualMachine)
	if !ok {
		return nil, &types.ManagedObjectNotFound{Obj: req.This}, fmt.Sprintf("The object '%s' has already been deleted or has not been completely created", req.This.Value)
	}
	var fd *frozenDisk
	if req.Snapshot != nil {
		s := l.snaps[req.Snapshot.Value]
		if s == nil {
			if simulator.Map.Get(*req.Snapshot) == nil {
				return nil, &types.ManagedObjectNotFound{Obj: *req.Snapshot}, fmt.Sprintf("The object '%s' has already been deleted or has not been completely created", req.Snapshot.Value)
			}
			return nil, &types.InvalidArgument{InvalidProperty: "snapshot"}, "A specified parameter was not correct: snapshot"
		}
		if s.vm != req.This {
			return nil, &types.InvalidArgument{InvalidProperty: "snapshot"}, "A specified parameter was not correct: snapshot"
		}
		fd = s.disks[req.DeviceKey]
	} else {
		// Without a snapshot vCenter computes against the current disk, which is only
		// allowed while the VM is powered off.
		var powered types.VirtualMachinePowerState
		var disks []diskView
		simulator.Map.WithLock(vm, func() {
			powered = vm.Runtime.PowerState
			disks = vmDisks(vm)
		})
		if powered != types.VirtualMachinePowerStatePoweredOff {
			return nil, &types.InvalidArgument{InvalidProperty: "snapshot"}, "A specified parameter was not correct: snapshot (required while the VM is powered on)"
		}
		for _, d := range disks {
			if d.key == req.DeviceKey {
				if st := l.disks[d.fileName]; st != nil {
					fd = &frozenDisk{path: st.path, source: st.path, capacity: st.capacity, epoch: st.epoch, seq: st.seq, stamps: st.stamps}
				}
			}
		}
	}
	if fd == nil {
		return nil, &types.InvalidArgument{InvalidProperty: "deviceKey"}, fmt.Sprintf("A specified parameter was not correct: deviceKey %d", req.DeviceKey)
	}
	return l.changedAreas(fd, req.StartOffset, req.ChangeId)
}

// changedAreas computes a QueryChangedDiskAreas answer for a frozen disk.
func (l *lab) changedAreas(fd *frozenDisk, startOffset int64, changeID string) (*types.DiskChangeInfo, types.BaseMethodFault, string) {
	var blocksFrom func() ([]int64, error)
	if fd.epoch == "" {
		// What vCenter answers when change tracking is off for the disk.
		var p object.DatastorePath
		p.FromString(fd.source)
		return nil, &types.FileFault{File: fd.source}, fmt.Sprintf("Error caused by file /vmfs/volumes/%s/%s", p.Datastore, p.Path)
	}
	if startOffset < 0 || startOffset > fd.capacity {
		return nil, &types.InvalidArgument{InvalidProperty: "startOffset"}, "A specified parameter was not correct: startOffset"
	}
	if changeID == "*" {
		blocksFrom = func() ([]int64, error) {
			local, err := l.localPath(fd.path)
			if err != nil {
				return nil, err
			}
			desc, err := readDescriptorFile(local)
			if err != nil {
				return nil, err
			}
			if desc.ParentHint != "" {
				c, err := openChain(local, false)
				if err != nil {
					return nil, err
				}
				defer c.Close()
				return c.nonZeroGrains()
			}
			flat, err := flatPath(local, desc)
			if err != nil {
				return nil, err
			}
			return nonZeroBlocks(flat, fd.capacity)
		}
	} else {
		i := strings.LastIndexByte(changeID, '/')
		var since uint64
		bad := i < 0 || changeID[:i] != fd.epoch
		if !bad {
			_, err := fmt.Sscanf(changeID[i+1:], "%d", &since)
			bad = err != nil || since > fd.seq || fmt.Sprint(since) != changeID[i+1:]
		}
		if bad {
			return nil, &types.InvalidArgument{InvalidProperty: "changeId"}, "A specified parameter was not correct: changeId"
		}
		blocksFrom = func() ([]int64, error) {
			var out []int64
			for b, stamp := range fd.stamps {
				if stamp > since {
					out = append(out, b)
				}
			}
			sortInt64(out)
			return out, nil
		}
	}
	blocks, err := blocksFrom()
	if err != nil {
		return nil, &types.FileFault{File: fd.path}, fmt.Sprintf("Error caused by file %s: %v", fd.path, err)
	}
	info := areasFrom(blocks, startOffset, fd.capacity, l.knobs.MaxChangedAreas)
	return &info, nil, ""
}

// areasFrom merges sorted 64 KiB block numbers into extents from start, stopping after max
// extents; Length tells the client how far this reply reaches.
func areasFrom(blocks []int64, start, capacity int64, max int) types.DiskChangeInfo {
	info := types.DiskChangeInfo{StartOffset: start, Length: capacity - start}
	for _, b := range blocks {
		s, e := b*blockSize, (b+1)*blockSize
		if e > capacity {
			e = capacity
		}
		if e <= start {
			continue
		}
		if s < start {
			s = start
		}
		n := len(info.ChangedArea)
		if n > 0 && info.ChangedArea[n-1].Start+info.ChangedArea[n-1].Length == s {
			info.ChangedArea[n-1].Length += e - s
			continue
		}
		if max > 0 && n == max {
			info.Length = s - start
			break
		}
		info.ChangedArea = append(info.ChangedArea, types.DiskChangeExtent{Start: s, Length: e - s})
	}
	return info
}

func sortInt64(v []int64) {
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
}

// failSnapshotTask removes a snapshot that could not be frozen and turns its (finished)
// CreateSnapshot task into a failed one.
func (l *lab) failSnapshotTask(ctx context.Context, rec *httptest.ResponseRecorder, snapRef types.ManagedObjectReference, cause error) {
	if res, err := methods.RemoveSnapshot_Task(ctx, l.client, &types.RemoveSnapshot_Task{This: snapRef}); err == nil {
		_ = object.NewTask(l.client, res.Returnval).Wait(ctx)
	}
	m := taskReturn.FindSubmatch(rec.Body.Bytes())
	if m == nil {
		return
	}
	task, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "Task", Value: string(m[1])}).(*simulator.Task)
	if !ok {
		return
	}
	fault := &types.LocalizedMethodFault{
		Fault:            &types.SnapshotFault{},
		LocalizedMessage: "the lab could not freeze the snapshot's disks: " + cause.Error(),
	}
	simulator.Map.WithLock(task, func() {
		simulator.Map.Update(task, []types.PropertyChange{
			{Name: "info.state", Val: types.TaskInfoStateError},
			{Name: "info.result", Val: nil},
			{Name: "info.error", Val: fault},
		})
	})
}
