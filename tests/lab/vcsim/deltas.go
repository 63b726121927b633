package main

// A VM's disk chains as snapshots change them: CreateSnapshot adds a delta on top of each
// disk (the VM writes to it, the snapshot keeps the file below), RemoveSnapshot merges the
// delta above the snapshot's file into that file, as ESXi consolidates. The delta format
// is in chain.go.

import (
	"fmt"
	"log"
	"path"
	"path/filepath"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// addDelta creates an empty delta child of the disk at a datastore path and returns the
// child's datastore path.
func (l *lab) addDelta(dsPath string) (string, error) {
	local, err := l.localPath(dsPath)
	if err != nil {
		return "", err
	}
	name, err := createDelta(local)
	if err != nil {
		return "", fmt.Errorf("creating a delta disk for %s: %w", dsPath, err)
	}
	var p object.DatastorePath
	p.FromString(dsPath)
	p.Path = path.Join(path.Dir(p.Path), name)
	return p.String(), nil
}

// dropDeltas removes deltas made for a snapshot that could not be completed.
func (l *lab) dropDeltas(deltas map[int32]string) {
	for _, p := range deltas {
		l.removeDiskFiles(p)
	}
}

// repointDisks makes the VM's disks (by device key) use new files and moves the lab's
// records (identity, change tracking) with them. Call with l.mu held.
func (l *lab) repointDisks(vm *simulator.VirtualMachine, files map[int32]string) {
	moved := map[string]string{}
	simulator.Map.WithLock(vm, func() {
		if vm.Config == nil {
			return
		}
		for _, dev := range vm.Config.Hardware.Device {
			disk, ok := dev.(*types.VirtualDisk)
			if !ok {
				continue
			}
			b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
			to, want := files[disk.Key]
			if !ok || !want || b.FileName == to {
				continue
			}
			moved[b.FileName] = to
			b.FileName = to
		}
	})
	for from, to := range moved {
		if st := l.disks[from]; st != nil {
			delete(l.disks, from)
			st.path = to
			l.disks[to] = st
		}
	}
}

// chainOf lists the datastore paths of a disk's chain, the disk itself first.
func (l *lab) chainOf(dsPath string) ([]string, error) {
	var p object.DatastorePath
	if !p.FromString(dsPath) {
		return nil, fmt.Errorf("not a datastore path: %q", dsPath)
	}
	out := []string{dsPath}
	cur := dsPath
	for depth := 0; ; depth++ {
		if depth > maxChainDepth {
			return nil, fmt.Errorf("%s: chain deeper than %d disks", dsPath, maxChainDepth)
		}
		local, err := l.localPath(cur)
		if err != nil {
			return nil, err
		}
		d, err := readDescriptorFile(local)
		if err != nil {
			return nil, err
		}
		if d.ParentHint == "" {
			return out, nil
		}
		if filepath.IsAbs(d.ParentHint) {
			return nil, fmt.Errorf("%s: parent %s is outside the datastore folder", cur, d.ParentHint)
		}
		var q object.DatastorePath
		q.FromString(cur)
		q.Path = path.Join(path.Dir(q.Path), d.ParentHint)
		cur = q.String()
		out = append(out, cur)
	}
}

// releaseSnapshot consolidates after a snapshot was removed: for each disk it froze, the
// delta directly above the frozen file (the disk's next snapshot, or the VM's current
// disk) is merged into it and removed, and whatever referred to the delta refers to the
// frozen file instead. A VM that is gone took its files with it (or was unregistered and
// keeps them): nothing is touched then. Call with l.mu held.
func (l *lab) releaseSnapshot(s *snapState) {
	vm, ok := simulator.Map.Get(s.vm).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	var disks []diskView
	simulator.Map.WithLock(vm, func() { disks = vmDisks(vm) })
	for key, fd := range s.disks {
		var current string
		for _, d := range disks {
			if d.key == key {
				current = d.fileName
			}
		}
		if current == "" {
			continue
		}
		chain, err := l.chainOf(current)
		if err != nil {
			log.Printf("lab: consolidating %s: %v", current, err)
			continue
		}
		i := -1
		for j, p := range chain {
			if p == fd.path {
				i = j
			}
		}
		if i <= 0 {
			continue
		}
		if err := l.mergeChild(vm, s.vm, key, chain, i); err != nil {
			log.Printf("lab: consolidating %s into %s: %v", chain[i-1], chain[i], err)
		}
	}
	l.syncVM(vm)
}

// mergeChild merges chain[i-1] (a delta) into chain[i] and removes it: the VM's disk, a
// snapshot's recorded file or the next delta's parent hint that named it names chain[i].
func (l *lab) mergeChild(vm *simulator.VirtualMachine, vmRef types.ManagedObjectReference, key int32, chain []string, i int) error {
	child, parent := chain[i-1], chain[i]
	childLocal, err := l.localPath(child)
	if err != nil {
		return err
	}
	parentLocal, err := mergeDelta(childLocal)
	if err != nil {
		return err
	}
	if i-1 == 0 {
		l.repointDisks(vm, map[int32]string{key: parent})
	} else {
		above, err := l.localPath(chain[i-2])
		if err != nil {
			return err
		}
		if err := rewriteParentHint(above, filepath.Base(parentLocal)); err != nil {
			return err
		}
	}
	for ref, s := range l.snaps {
		if s.vm != vmRef || s.disks[key] == nil || s.disks[key].path != child {
			continue
		}
		s.disks[key].path = parent
		snap, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachineSnapshot", Value: ref}).(*simulator.VirtualMachineSnapshot)
		if !ok {
			continue
		}
		simulator.Map.WithLock(snap, func() {
			for _, dev := range snap.Config.Hardware.Device {
				if d, ok := dev.(*types.VirtualDisk); ok && d.Key == key {
					if b, ok := d.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
						b.FileName = parent
					}
				}
			}
		})
	}
	l.removeDiskFiles(child)
	return syncDir(filepath.Dir(childLocal))
}
