package main

import (
	"context"
	"fmt"
	"io/ioutil"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vslm"
	vslmtypes "github.com/vmware/govmomi/vslm/types"
)

// The VSLM endpoint (/vslm/sdk): first class disk calls translated onto the simulator's
// VcenterVStorageObjectManager, with the lab's files, snapshots and change tracking.
// Sessions are the VIM session cookie, as for govmomi's vslm client.

var vslmManager = types.ManagedObjectReference{Type: "VslmVStorageObjectManager", Value: "VStorageObjectManager"}

func vslmTypeFunc(name string) (reflect.Type, bool) {
	if t, ok := types.TypeFunc()("vslm:" + name); ok {
		return t, true
	}
	return types.TypeFunc()(name)
}

// vslmTasks are VslmTask objects; every VSLM task runs to completion before its call
// returns, so a task is only ever looked up afterwards.
type vslmTasks struct {
	seq   int
	infos map[string]*vslmtypes.VslmTaskInfo
}

func (l *lab) vslmTask(name string, run func() (types.AnyType, types.BaseMethodFault)) types.ManagedObjectReference {
	if l.vslm.infos == nil {
		l.vslm.infos = map[string]*vslmtypes.VslmTaskInfo{}
	}
	l.vslm.seq++
	ref := types.ManagedObjectReference{Type: "VslmTask", Value: fmt.Sprintf("vslm-task-%d", l.vslm.seq)}
	start := time.Now()
	res, fault := run()
	done := time.Now()
	info := &vslmtypes.VslmTaskInfo{
		Key: ref.Value, Task: ref, Name: name, DescriptionId: "com.vmware.cns.tasks." + name,
		State: vslmtypes.VslmTaskInfoStateSuccess, Result: res,
		Reason:    &vslmtypes.VslmTaskReasonUser{UserName: l.user},
		QueueTime: start, StartTime: &start, CompleteTime: &done,
	}
	if fault != nil {
		info.State = vslmtypes.VslmTaskInfoStateError
		info.Result = nil
		info.Error = &types.LocalizedMethodFault{Fault: fault, LocalizedMessage: fmt.Sprintf("%T", fault)}
	}
	l.vslm.infos[ref.Value] = info
	return ref
}

// fcdDatastore finds the datastore holding a first class disk.
func (l *lab) fcdDatastore(ctx context.Context, id string) (types.ManagedObjectReference, types.BaseMethodFault) {
	om := vslm.NewObjectManager(l.client)
	for _, e := range simulator.Map.All("Datastore") {
		ds := e.(*simulator.Datastore).Self
		ids, err := om.List(ctx, ds)
		if err != nil {
			continue
		}
		for _, x := range ids {
			if x.Id == id {
				return ds, nil
			}
		}
	}
	return types.ManagedObjectReference{}, &types.NotFound{}
}

func (l *lab) serveVSLM(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	body, err := ioutil.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	method, err := simulator.UnmarshalBody(vslmTypeFunc, body)
	if err != nil {
		writeFault(w, err.Error(), &types.InvalidRequest{})
		return
	}
	if rec := l.probeSession(r); rec != nil {
		copyRecorded(w, rec)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	defer l.saveChangeLog()
	ctx := r.Context()
	om := vslm.NewObjectManager(l.client)
	withDS := func(id types.ID, f func(ds types.ManagedObjectReference) (types.AnyType, types.BaseMethodFault)) (types.AnyType, types.BaseMethodFault) {
		ds, fault := l.fcdDatastore(ctx, id.Id)
		if fault != nil {
			return nil, fault
		}
		return f(ds)
	}
	respond := func(name string, res interface{}, fault types.BaseMethodFault) {
		if fault != nil {
			writeFault(w, faultMessage(fault), fault)
			return
		}
		writeResponseNS(w, "urn:vslm", name+"Response", res)
	}
	taskResponse := func(name string, run func() (types.AnyType, types.BaseMethodFault)) {
		ref := l.vslmTask(name, run)
		writeResponseNS(w, "urn:vslm", name+"Response", &struct {
			Returnval types.ManagedObjectReference `xml:"returnval"`
		}{ref})
	}

	switch req := method.Body.(type) {
	case *vslmtypes.RetrieveContent:
		respond("RetrieveContent", &vslmtypes.RetrieveContentResponse{Returnval: vslmtypes.VslmServiceInstanceContent{
			AboutInfo: vslmtypes.VslmAboutInfo{Name: "VMware Virtual Storage Lifecycle Manager Service (safekeeping lab)",
				FullName: "VMware Virtual Storage Lifecycle Manager Service 1.0.0", Vendor: "VMware, Inc.", ApiVersion: "1.0.0",
				InstanceUuid: "5f6c0f2c-1c53-4a4a-9a3b-6c61622d7673"},
			SessionManager:          types.ManagedObjectReference{Type: "VslmSessionManager", Value: "SessionManager"},
			VStorageObjectManager:   vslmManager,
			StorageLifecycleManager: types.ManagedObjectReference{Type: "VslmStorageLifecycleManager", Value: "StorageLifecycleManager"},
		}}, nil)
	case *vslmtypes.VslmQueryInfo:
		info := l.vslm.infos[req.This.Value]
		if info == nil {
			respond("", nil, &types.ManagedObjectNotFound{Obj: req.This})
			return
		}
		respond("VslmQueryInfo", &vslmtypes.VslmQueryInfoResponse{Returnval: *info}, nil)
	case *vslmtypes.VslmQueryTaskResult:
		info := l.vslm.infos[req.This.Value]
		if info == nil {
			respond("", nil, &types.ManagedObjectNotFound{Obj: req.This})
			return
		}
		respond("VslmQueryTaskResult", &vslmtypes.VslmQueryTaskResultResponse{Returnval: info.Result}, nil)
	case *vslmtypes.VslmCreateDisk_Task:
		taskResponse("VslmCreateDisk_Task", func() (types.AnyType, types.BaseMethodFault) {
			t, err := om.CreateDisk(ctx, req.Spec)
			if err != nil {
				return nil, asFault(err)
			}
			info, err := t.WaitForResult(ctx, nil)
			if err != nil {
				return nil, asFault(err)
			}
			l.materializeFCD(info.Result)
			switch x := info.Result.(type) {
			case *types.VStorageObject:
				return *x, nil
			case types.VStorageObject:
				return x, nil
			}
			return nil, &types.SystemError{Reason: "CreateDisk returned no object"}
		})
	case *vslmtypes.VslmRetrieveVStorageObject:
		obj, fault := withDS(req.Id, func(ds types.ManagedObjectReference) (types.AnyType, types.BaseMethodFault) {
			o, err := om.Retrieve(ctx, ds, req.Id.Id)
			if err != nil {
				return nil, asFault(err)
			}
			return *o, nil
		})
		if fault != nil {
			respond("", nil, fault)
			return
		}
		respond("VslmRetrieveVStorageObject", &vslmtypes.VslmRetrieveVStorageObjectResponse{Returnval: obj.(types.VStorageObject)}, nil)
	case *vslmtypes.VslmListVStorageObjectForSpec:
		res, fault := l.vslmList(ctx, req)
		respond("VslmListVStorageObjectForSpec", &vslmtypes.VslmListVStorageObjectForSpecResponse{Returnval: res}, fault)
	case *vslmtypes.VslmDeleteVStorageObject_Task:
		taskResponse("VslmDeleteVStorageObject_Task", func() (types.AnyType, types.BaseMethodFault) {
			return withDS(req.Id, func(ds types.ManagedObjectReference) (types.AnyType, types.BaseMethodFault) {
				t, err := om.Delete(ctx, ds, req.Id.Id)
				if err == nil {
					_, err = t.WaitForResult(ctx, nil)
				}
				if err != nil {
					return nil, asFault(err)
				}
				l.syncAll()
				return nil, nil
			})
		})
	case *vslmtypes.VslmCreateSnapshot_Task:
		taskResponse("VslmCreateSnapshot_Task", func() (types.AnyType, types.BaseMethodFault) {
			return withDS(req.Id, func(ds types.ManagedObjectReference) (types.AnyType, types.BaseMethodFault) {
				t, err := om.CreateSnapshot(ctx, ds, req.Id.Id, req.Description)
				if err != nil {
					return nil, asFault(err)
				}
				info, err := t.WaitForResult(ctx, nil)
				if err != nil {
					return nil, asFault(err)
				}
				var snap types.ID
				switch x := info.Result.(type) {
				case *types.ID:
					snap = *x
				case types.ID:
					snap = x
				}
				if err := l.freezeFCD(ctx, req.Id, ds, snap.Id); err != nil {
					return nil, &types.SystemError{Reason: err.Error()}
				}
				return snap, nil
			})
		})
	case *vslmtypes.VslmDeleteSnapshot_Task:
		taskResponse("VslmDeleteSnapshot_Task", func() (types.AnyType, types.BaseMethodFault) {
			return withDS(req.Id, func(ds types.ManagedObjectReference) (types.AnyType, types.BaseMethodFault) {
				t, err := om.DeleteSnapshot(ctx, ds, req.Id.Id, req.SnapshotId.Id)
				if err == nil {
					_, err = t.WaitForResult(ctx, nil)
				}
				if err != nil {
					return nil, asFault(err)
				}
				l.dropFCDSnapshot(req.SnapshotId.Id)
				return nil, nil
			})
		})
	case *vslmtypes.VslmRetrieveSnapshotInfo:
		res, fault := withDS(req.Id, func(ds types.ManagedObjectReference) (types.AnyType, types.BaseMethodFault) {
			info, err := om.RetrieveSnapshotInfo(ctx, ds, req.Id.Id)
			if err != nil {
				return nil, asFault(err)
			}
			return *info, nil
		})
		if fault != nil {
			respond("", nil, fault)
			return
		}
		respond("VslmRetrieveSnapshotInfo", &vslmtypes.VslmRetrieveSnapshotInfoResponse{Returnval: res.(types.VStorageObjectSnapshotInfo)}, nil)
	case *vslmtypes.VslmRetrieveSnapshotDetails:
		d, fault, msg := l.fcdSnapshotDetails(&types.RetrieveSnapshotDetails{Id: req.Id, SnapshotId: req.SnapshotId})
		if fault != nil {
			writeFault(w, msg, fault)
			return
		}
		respond("VslmRetrieveSnapshotDetails", &vslmtypes.VslmRetrieveSnapshotDetailsResponse{Returnval: *d}, nil)
	case *vslmtypes.VslmQueryChangedDiskAreas:
		fd, fault, msg := l.fcdSnapshot(req.Id, req.SnapshotId)
		if fault != nil {
			writeFault(w, msg, fault)
			return
		}
		info, fault, msg := l.changedAreas(fd, req.StartOffset, req.ChangeId)
		if fault != nil {
			writeFault(w, msg, fault)
			return
		}
		respond("VslmQueryChangedDiskAreas", &vslmtypes.VslmQueryChangedDiskAreasResponse{Returnval: *info}, nil)
	default:
		writeFault(w, fmt.Sprintf("the lab's VSLM endpoint does not implement %s", method.Name),
			&types.MethodNotFound{Receiver: method.This, Method: method.Name})
	}
}

func (l *lab) vslmList(ctx context.Context, req *vslmtypes.VslmListVStorageObjectForSpec) (*vslmtypes.VslmVsoVStorageObjectQueryResult, types.BaseMethodFault) {
	om := vslm.NewObjectManager(l.client)
	var datastores []types.ManagedObjectReference
	for _, e := range simulator.Map.All("Datastore") {
		datastores = append(datastores, e.(*simulator.Datastore).Self)
	}
	for _, q := range req.Query {
		switch {
		case q.QueryField == "datastoreMoId" && q.QueryOperator == "equals":
			var keep []types.ManagedObjectReference
			for _, ds := range datastores {
				for _, v := range q.QueryValue {
					if ds.Value == v {
						keep = append(keep, ds)
					}
				}
			}
			datastores = keep
		default:
			return nil, &types.InvalidArgument{InvalidProperty: "query"}
		}
	}
	res := &vslmtypes.VslmVsoVStorageObjectQueryResult{AllRecordsReturned: true}
	for _, ds := range datastores {
		ids, err := om.List(ctx, ds)
		if err != nil {
			return nil, asFault(err)
		}
		for _, id := range ids {
			if req.MaxResult > 0 && int32(len(res.Id)) >= req.MaxResult {
				res.AllRecordsReturned = false
				return res, nil
			}
			res.Id = append(res.Id, id)
		}
	}
	return res, nil
}

func faultMessage(f types.BaseMethodFault) string {
	name := fmt.Sprintf("%T", f)
	return strings.TrimPrefix(name[strings.LastIndex(name, ".")+1:], "*")
}
