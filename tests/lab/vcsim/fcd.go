package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vslm"
)

// First class disks: the lab tracks changes on every disk made by CreateDisk_Task (CBT is
// on from creation, as `changedBlockTrackingEnabled` reports), freezes the disk at
// VStorageObjectCreateSnapshot_Task, and answers VstorageObjectVCenterQueryChangedDiskAreas
// and RetrieveSnapshotDetails from that record.

// fcdSnapKey is the key of a first class disk snapshot in lab.snaps.
func fcdSnapKey(snapshotID string) string { return "fcd:" + snapshotID }

// fcdPath finds a first class disk's descriptor path.
func (l *lab) fcdPath(ctx context.Context, id types.ID, ds types.ManagedObjectReference) (string, error) {
	obj, err := vslm.NewObjectManager(l.client).Retrieve(ctx, ds, id.Id)
	if err != nil {
		return "", err
	}
	b, ok := obj.Config.Backing.(*types.BaseConfigInfoDiskFileBackingInfo)
	if !ok {
		return "", fmt.Errorf("first class disk %s has no file backing", id.Id)
	}
	return b.FilePath, nil
}

// enableFCDTracking turns change tracking on for a new first class disk.
func (l *lab) enableFCDTracking(obj *types.VStorageObject) {
	b, ok := obj.Config.Backing.(*types.BaseConfigInfoDiskFileBackingInfo)
	if !ok {
		return
	}
	st := l.disks[b.FilePath]
	if st == nil {
		return
	}
	st.epoch = spacedHex(randomBytes(16))
	st.seq = 1
	st.stamps = map[int64]uint64{}
	// vcsim keeps the object's flags behind the same pointer as this copy.
	if obj.Config.ChangedBlockTrackingEnabled != nil {
		*obj.Config.ChangedBlockTrackingEnabled = true
	}
}

// freezeFCD copies a first class disk at a snapshot and records its change tracking state.
func (l *lab) freezeFCD(ctx context.Context, id types.ID, ds types.ManagedObjectReference, snapID string) error {
	path, err := l.fcdPath(ctx, id, ds)
	if err != nil {
		return err
	}
	l.fcds[id.Id] = path
	st := l.disks[path]
	if st == nil {
		// A registered disk the lab has not seen yet.
		desc, err := l.readDescriptorAt(path)
		if err != nil {
			return err
		}
		st, err = l.ensureDisk(diskView{fileName: path, capacity: desc.Capacity(), adapter: "lsilogic"})
		if err != nil {
			return err
		}
	}
	frozen, err := l.freezeDisk(path, "snap-"+strings.SplitN(snapID, "-", 2)[0])
	if err != nil {
		return err
	}
	fd := &frozenDisk{path: frozen, source: path, capacity: st.capacity, epoch: st.epoch, seq: st.seq}
	if st.epoch != "" {
		fd.stamps = make(map[int64]uint64, len(st.stamps))
		for k, v := range st.stamps {
			fd.stamps[k] = v
		}
		st.seq++
	}
	l.snaps[fcdSnapKey(snapID)] = &snapState{fcdID: id.Id, disks: map[int32]*frozenDisk{0: fd}}
	return nil
}

func (l *lab) readDescriptorAt(dsPath string) (*descriptor, error) {
	local, err := l.localPath(dsPath)
	if err != nil {
		return nil, err
	}
	return readDescriptorFile(local)
}

// dropFCDSnapshot deletes a first class disk snapshot's frozen copy.
func (l *lab) dropFCDSnapshot(snapID string) {
	s := l.snaps[fcdSnapKey(snapID)]
	if s == nil {
		return
	}
	for _, fd := range s.disks {
		l.removeDiskFiles(fd.path)
	}
	delete(l.snaps, fcdSnapKey(snapID))
}

// fcdSnapshot finds the record of a first class disk snapshot, or the fault to answer.
func (l *lab) fcdSnapshot(id types.ID, snapID types.ID) (*frozenDisk, types.BaseMethodFault, string) {
	s := l.snaps[fcdSnapKey(snapID.Id)]
	if s == nil || s.fcdID != id.Id {
		return nil, &types.NotFound{}, fmt.Sprintf("The object or item referred to could not be found: snapshot %s of disk %s", snapID.Id, id.Id)
	}
	return s.disks[0], nil, ""
}

// queryFCDChangedAreas answers VstorageObjectVCenterQueryChangedDiskAreas.
func (l *lab) queryFCDChangedAreas(req *types.VstorageObjectVCenterQueryChangedDiskAreas) (*types.DiskChangeInfo, types.BaseMethodFault, string) {
	fd, fault, msg := l.fcdSnapshot(req.Id, req.SnapshotId)
	if fault != nil {
		return nil, fault, msg
	}
	return l.changedAreas(fd, req.StartOffset, req.ChangeId)
}

// fcdSnapshotDetails answers RetrieveSnapshotDetails: the frozen copy and its change id.
func (l *lab) fcdSnapshotDetails(req *types.RetrieveSnapshotDetails) (*types.VStorageObjectSnapshotDetails, types.BaseMethodFault, string) {
	fd, fault, msg := l.fcdSnapshot(req.Id, req.SnapshotId)
	if fault != nil {
		return nil, fault, msg
	}
	d := &types.VStorageObjectSnapshotDetails{Path: fd.path}
	if fd.epoch != "" {
		d.ChangedBlockTrackingId = fmt.Sprintf("%s/%d", fd.epoch, fd.seq)
	}
	return d, nil, ""
}

// sweepFCDSnapshots drops snapshot records of first class disks that no longer exist.
func (l *lab) sweepFCDSnapshots() {
	for key, s := range l.snaps {
		if s.fcdID == "" {
			continue
		}
		for _, fd := range s.disks {
			local, err := l.localPath(fd.source)
			if err != nil {
				continue
			}
			if _, err := os.Stat(local); os.IsNotExist(err) {
				l.removeDiskFiles(fd.path)
				delete(l.snaps, key)
			}
		}
	}
}
