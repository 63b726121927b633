package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"path/filepath"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"
)

// quiesceRecord is what the lab keeps of the last CreateSnapshotEx_Task's quiesceSpec per VM,
// in DIR/quiesce-specs.json, so a test can check what a backup asked of the guest.
type quiesceRecord struct {
	Type                   string `json:"type"`
	Timeout                int32  `json:"timeout"`
	VssBackupType          int32  `json:"vss_backup_type,omitempty"`
	VssBootableSystemState *bool  `json:"vss_bootable_system_state,omitempty"`
	VssPartialFileSupport  *bool  `json:"vss_partial_file_support,omitempty"`
	VssBackupContext       string `json:"vss_backup_context,omitempty"`
}

// quiesceSpecs holds the records by VM name; guarded by lab.mu.
var quiesceSpecs = map[string]quiesceRecord{}

// createSnapshotEx records the quiesce spec and takes the snapshot as CreateSnapshot_Task
// (quiesced when there is a spec), which vcsim implements and the lab freezes. Called with
// l.mu held.
func (l *lab) createSnapshotEx(w http.ResponseWriter, r *http.Request, req *types.CreateSnapshotEx_Task) {
	plain := &types.CreateSnapshot_Task{
		This:        req.This,
		Name:        req.Name,
		Description: req.Description,
		Memory:      req.Memory,
		Quiesce:     req.QuiesceSpec != nil,
	}
	if req.QuiesceSpec != nil {
		rec := quiesceRecord{Type: "VirtualMachineGuestQuiesceSpec"}
		switch s := req.QuiesceSpec.(type) {
		case *types.VirtualMachineWindowsQuiesceSpec:
			rec.Type = "VirtualMachineWindowsQuiesceSpec"
			rec.Timeout = s.Timeout
			rec.VssBackupType = s.VssBackupType
			rec.VssBootableSystemState = s.VssBootableSystemState
			rec.VssPartialFileSupport = s.VssPartialFileSupport
			rec.VssBackupContext = s.VssBackupContext
		case *types.VirtualMachineGuestQuiesceSpec:
			rec.Timeout = s.Timeout
		}
		name := req.This.Value
		if vm, ok := simulator.Map.Get(req.This).(*simulator.VirtualMachine); ok {
			name = vm.Name
		}
		quiesceSpecs[name] = rec
		_ = writeJSONAtomic(filepath.Join(l.dir, "quiesce-specs.json"), quiesceSpecs)
	}
	body, err := encodeRequest(&methods.CreateSnapshot_TaskBody{Req: plain})
	if err != nil {
		writeFault(w, err.Error(), &types.SystemError{Reason: err.Error()})
		return
	}
	// The answer is vcsim's CreateSnapshot_TaskResponse under the name the client called.
	rec := httptest.NewRecorder()
	l.createSnapshot(rec, r, body, plain)
	fixed := bytes.ReplaceAll(rec.Body.Bytes(), []byte("CreateSnapshot_TaskResponse"), []byte("CreateSnapshotEx_TaskResponse"))
	rec.Body = bytes.NewBuffer(fixed)
	rec.Header().Del("Content-Length")
	copyRecorded(w, rec)
}
