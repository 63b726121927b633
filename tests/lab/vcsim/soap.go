package main

import (
	"bytes"
	"fmt"
	"io/ioutil"
	"log"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime/debug"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vim25/xml"
)

// Methods after which the lab brings files and records in line with the inventory.
var mutating = map[string]bool{
	"CreateVM_Task": true, "ReconfigVM_Task": true, "Destroy_Task": true, "UnregisterVM": true,
	"CloneVM_Task": true, "RelocateVM_Task": true, "PowerOnVM_Task": true, "PowerOffVM_Task": true,
	"RemoveSnapshot_Task": true, "RemoveAllSnapshots_Task": true, "RevertToSnapshot_Task": true,
	"Rename_Task": true, "CreateVirtualDisk_Task": true, "DeleteVirtualDisk_Task": true,
	"DeleteDatastoreFile_Task": true, "DeleteVStorageObject_Task": true, "MarkAsTemplate": true, "MarkAsVirtualMachine": true,
}

// serveSDK is the front of /sdk: it decodes the request with the simulator's own
// unmarshalling, answers what the lab overrides and passes everything else to vcsim.
func (l *lab) serveSDK(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		l.svc.ServeSDK(w, r)
		return
	}
	body, err := ioutil.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	defer func() {
		// A bug in the lab must show up as a fault the client can report, not as a
		// dropped connection.
		if p := recover(); p != nil {
			log.Printf("lab: panic serving %s: %v\n%s", r.URL.Path, p, debug.Stack())
			writeFault(w, fmt.Sprintf("lab simulator error: %v", p), &types.SystemError{Reason: fmt.Sprint(p)})
		}
	}()
	method, err := simulator.UnmarshalBody(types.TypeFunc(), body)
	if err != nil {
		// vcsim answers undecodable requests with its own fault.
		l.pass(w, r, body)
		return
	}
	if method.Name == "Fetch" && l.serveFetch(w, r, body, method) {
		return
	}
	switch method.Body.(type) {
	case *types.Login, *types.LoginByToken:
		l.serveLogin(w, r, body) // sts.go: records the sessions VDDK may connect with
		return
	}
	switch method.Body.(type) {
	case *types.QueryChangedDiskAreas, *types.CreateSnapshot_Task, *types.CreateSnapshotEx_Task, *types.RegisterVM_Task,
		*types.VstorageObjectVCenterQueryChangedDiskAreas, *types.RetrieveSnapshotDetails,
		*types.UpdateVAppConfig, *types.PowerOnVApp_Task, *types.PowerOffVApp_Task,
		*types.ListVStorageObjectsAttachedToTag, *types.AttachDisk_Task, *types.DetachDisk_Task,
		*types.HasPrivilegeOnEntities:
		if rec := l.probeSession(r); rec != nil {
			copyRecorded(w, rec)
			return
		}
	}
	switch req := method.Body.(type) {
	case *types.HasPrivilegeOnEntities:
		writeResponse(w, "HasPrivilegeOnEntitiesResponse", l.hasPrivilegeOnEntities(req))
		return
	case *types.QueryChangedDiskAreas:
		l.mu.Lock()
		defer l.mu.Unlock()
		defer l.saveChangeLog()
		info, fault, msg := l.queryChangedDiskAreas(req)
		if fault != nil {
			writeFault(w, msg, fault)
			return
		}
		writeResponse(w, "QueryChangedDiskAreasResponse", &types.QueryChangedDiskAreasResponse{Returnval: *info})
		return
	case *types.CreateSnapshot_Task:
		l.mu.Lock()
		defer l.mu.Unlock()
		defer l.saveChangeLog()
		l.createSnapshot(w, r, body, req)
		return
	case *types.CreateSnapshotEx_Task:
		l.mu.Lock()
		defer l.mu.Unlock()
		defer l.saveChangeLog()
		l.createSnapshotEx(w, r, req)
		return
	case *types.RegisterVM_Task:
		l.mu.Lock()
		defer l.mu.Unlock()
		defer l.saveChangeLog()
		task := l.registerVM(r.Context(), req)
		writeResponse(w, "RegisterVM_TaskResponse", &types.RegisterVM_TaskResponse{Returnval: task})
		l.syncAll()
		return
	case *types.CreateDisk_Task:
		l.mu.Lock()
		defer l.mu.Unlock()
		defer l.saveChangeLog()
		rec := l.passRecorded(r, body)
		if res, ok := taskResult(rec); ok {
			l.materializeFCD(res)
		}
		copyRecorded(w, rec)
		return
	case *types.VStorageObjectCreateSnapshot_Task:
		l.mu.Lock()
		defer l.mu.Unlock()
		defer l.saveChangeLog()
		rec := l.passRecorded(r, body)
		if res, ok := taskResult(rec); ok {
			var snapID string
			switch x := res.(type) {
			case *types.ID:
				snapID = x.Id
			case types.ID:
				snapID = x.Id
			}
			if err := l.freezeFCD(r.Context(), req.Id, req.Datastore, snapID); err != nil {
				log.Printf("lab: freezing first class disk %s at %s: %v", req.Id.Id, snapID, err)
			}
		}
		copyRecorded(w, rec)
		return
	case *types.DeleteSnapshot_Task:
		l.mu.Lock()
		defer l.mu.Unlock()
		defer l.saveChangeLog()
		rec := l.passRecorded(r, body)
		if _, ok := taskResult(rec); ok {
			l.dropFCDSnapshot(req.SnapshotId.Id)
		}
		copyRecorded(w, rec)
		return
	case *types.VstorageObjectVCenterQueryChangedDiskAreas:
		l.mu.Lock()
		defer l.mu.Unlock()
		defer l.saveChangeLog()
		info, fault, msg := l.queryFCDChangedAreas(req)
		if fault != nil {
			writeFault(w, msg, fault)
			return
		}
		writeResponse(w, "VstorageObjectVCenterQueryChangedDiskAreasResponse", &types.VstorageObjectVCenterQueryChangedDiskAreasResponse{Returnval: *info})
		return
	case *types.RetrieveSnapshotDetails:
		l.mu.Lock()
		defer l.mu.Unlock()
		defer l.saveChangeLog()
		d, fault, msg := l.fcdSnapshotDetails(req)
		if fault != nil {
			writeFault(w, msg, fault)
			return
		}
		writeResponse(w, "RetrieveSnapshotDetailsResponse", &types.RetrieveSnapshotDetailsResponse{Returnval: *d})
		return
	case *types.AttachDisk_Task, *types.DetachDisk_Task:
		l.mu.Lock()
		defer l.mu.Unlock()
		defer l.saveChangeLog()
		if a, ok := req.(*types.AttachDisk_Task); ok {
			task := vappTask(a.This, "attachDisk_Task", nil, l.attachFCD(r.Context(), a))
			writeResponse(w, "AttachDisk_TaskResponse", &types.AttachDisk_TaskResponse{Returnval: task})
		} else {
			d := req.(*types.DetachDisk_Task)
			task := vappTask(d.This, "detachDisk_Task", nil, l.detachFCD(r.Context(), d))
			writeResponse(w, "DetachDisk_TaskResponse", &types.DetachDisk_TaskResponse{Returnval: task})
		}
		l.syncAll()
		return
	case *types.ListVStorageObjectsAttachedToTag:
		l.mu.Lock()
		defer l.mu.Unlock()
		ids, fault := l.fcdsAttachedToTag(req.Category, req.Tag)
		if fault != nil {
			writeFault(w, faultMessage(fault), fault)
			return
		}
		writeResponse(w, "ListVStorageObjectsAttachedToTagResponse", &types.ListVStorageObjectsAttachedToTagResponse{Returnval: ids})
		return
	case *types.CreateVApp:
		for _, p := range req.ConfigSpec.Product {
			if p.Info == nil && p.Operation != types.ArrayUpdateOperationRemove {
				writeFault(w, "A specified parameter was not correct: product.info", &types.InvalidArgument{InvalidProperty: "product.info"})
				return
			}
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		rec := l.passRecorded(r, body)
		if m := vappReturn.FindSubmatch(rec.Body.Bytes()); rec.Code == http.StatusOK && m != nil {
			l.createdVApp(types.ManagedObjectReference{Type: "VirtualApp", Value: string(m[1])}, &req.ConfigSpec)
		}
		copyRecorded(w, rec)
		return
	case *types.UpdateVAppConfig:
		l.mu.Lock()
		defer l.mu.Unlock()
		if fault := l.configureVApp(req.This, &req.Spec); fault != nil {
			writeFault(w, faultMessage(fault), fault)
			return
		}
		writeResponse(w, "UpdateVAppConfigResponse", &types.UpdateVAppConfigResponse{})
		return
	case *types.CreateChildVM_Task:
		if f, msg := checkConfigSpec(&req.Config); f != nil {
			writeFault(w, msg, f)
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		defer l.saveChangeLog()
		rec := l.passRecorded(r, body)
		if res, ok := taskResult(rec); ok {
			if vm, ok := res.(types.ManagedObjectReference); ok {
				l.adoptChildVM(req.This, vm)
			}
		}
		l.syncAll()
		copyRecorded(w, rec)
		return
	case *types.PowerOnVApp_Task, *types.PowerOffVApp_Task:
		l.mu.Lock()
		defer l.mu.Unlock()
		defer l.saveChangeLog()
		var task types.ManagedObjectReference
		if on, ok := req.(*types.PowerOnVApp_Task); ok {
			_, fault := l.powerVApp(r.Context(), on.This, true, false)
			task = vappTask(on.This, "powerOnVApp_Task", nil, fault)
			writeResponse(w, "PowerOnVApp_TaskResponse", &types.PowerOnVApp_TaskResponse{Returnval: task})
		} else {
			off := req.(*types.PowerOffVApp_Task)
			_, fault := l.powerVApp(r.Context(), off.This, false, off.Force)
			task = vappTask(off.This, "powerOffVApp_Task", nil, fault)
			writeResponse(w, "PowerOffVApp_TaskResponse", &types.PowerOffVApp_TaskResponse{Returnval: task})
		}
		l.syncAll()
		return
	case *types.Destroy_Task:
		if req.This.Type == "VirtualApp" {
			l.mu.Lock()
			defer l.mu.Unlock()
			defer l.saveChangeLog()
			if fault := l.destroyVAppChildren(r.Context(), req.This); fault != nil {
				task := vappTask(req.This, "destroy_Task", nil, fault)
				writeResponse(w, "Destroy_TaskResponse", &types.Destroy_TaskResponse{Returnval: task})
				l.syncAll()
				return
			}
			l.pass(w, r, body)
			l.syncAll()
			return
		}
	case *types.CreateVM_Task:
		if f, msg := checkConfigSpec(&req.Config); f != nil {
			writeFault(w, msg, f)
			return
		}
		if specHasProfiles(&req.Config) {
			l.mu.Lock()
			defer l.mu.Unlock()
			defer l.saveChangeLog()
			l.passKeepingProfiles(w, r, body, nil, &req.Config)
			l.syncAll()
			return
		}
	case *types.ReconfigVM_Task:
		if f, msg := checkConfigSpec(&req.Spec); f != nil {
			writeFault(w, msg, f)
			return
		}
		if fillDeviceInfo(&req.Spec) {
			// vcsim dereferences deviceInfo of edited devices; vCenter does not need it.
			if b, err := encodeRequest(&methods.ReconfigVM_TaskBody{Req: req}); err == nil {
				body = b
			}
		}
		if specHasProfiles(&req.Spec) {
			l.mu.Lock()
			defer l.mu.Unlock()
			defer l.saveChangeLog()
			l.passKeepingProfiles(w, r, body, &req.This, &req.Spec)
			l.syncAll()
			return
		}
	}
	if mutating[method.Name] {
		l.mu.Lock()
		defer l.mu.Unlock()
		defer l.saveChangeLog()
		l.pass(w, r, body)
		l.syncAll()
		return
	}
	l.pass(w, r, body)
}

const probeBody = `<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><CurrentTime xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></CurrentTime></soapenv:Body></soapenv:Envelope>`

// probeSession checks the request's session with a harmless call through vcsim; it returns
// vcsim's fault (NotAuthenticated, as vCenter answers) when the session is not valid.
func (l *lab) probeSession(r *http.Request) *httptest.ResponseRecorder {
	probe := r.Clone(r.Context())
	probe.Method = http.MethodPost
	probe.URL.Path = "/sdk"
	probe.URL.RawQuery = ""
	rec := l.passRecorded(probe, []byte(probeBody))
	if rec.Code == http.StatusOK {
		return nil
	}
	return rec
}

func (l *lab) pass(w http.ResponseWriter, r *http.Request, body []byte) {
	r.Body = ioutil.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	l.svc.ServeSDK(w, r)
}

// passRecorded runs the call through vcsim and returns its recorded answer.
func (l *lab) passRecorded(r *http.Request, body []byte) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	l.pass(rec, r, body)
	return rec
}

func copyRecorded(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// taskResult is the result of the (synchronously finished) task a recorded vcsim reply
// returned, when it succeeded.
func taskResult(rec *httptest.ResponseRecorder) (types.AnyType, bool) {
	m := taskReturn.FindSubmatch(rec.Body.Bytes())
	if rec.Code != http.StatusOK || m == nil {
		return nil, false
	}
	task, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "Task", Value: string(m[1])}).(*simulator.Task)
	if !ok {
		return nil, false
	}
	var res types.AnyType
	var done bool
	simulator.Map.WithLock(task, func() {
		res, done = task.Info.Result, task.Info.State == types.TaskInfoStateSuccess
	})
	return res, done
}

var taskReturn = regexp.MustCompile(`<returnval type="Task">([^<]+)</returnval>`)

var vappReturn = regexp.MustCompile(`<returnval type="VirtualApp">([^<]+)</returnval>`)

const envelopeStart = `<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
	`<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>`
const envelopeEnd = `</soapenv:Body></soapenv:Envelope>`

// writeResponse encodes a method response in the urn:vim25 namespace.
func writeResponse(w http.ResponseWriter, name string, res interface{}) {
	writeResponseNS(w, "urn:vim25", name, res)
}

// writeResponseNS encodes a method response in a namespace.
func writeResponseNS(w http.ResponseWriter, ns, name string, res interface{}) {
	var buf bytes.Buffer
	buf.WriteString(envelopeStart)
	enc := xml.NewEncoder(&buf)
	start := xml.StartElement{Name: xml.Name{Local: name}, Attr: []xml.Attr{{Name: xml.Name{Local: "xmlns"}, Value: ns}}}
	if err := enc.EncodeElement(res, start); err != nil {
		log.Printf("lab: encoding %s: %v", name, err)
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	if err := enc.Flush(); err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	buf.WriteString(envelopeEnd)
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

// writeFault writes a SOAP fault the way vCenter does: the detail element is named
// "<Type>Fault" and carries xsi:type="<Type>".
func writeFault(w http.ResponseWriter, msg string, fault types.BaseMethodFault) {
	typeName := fmt.Sprintf("%T", fault)
	typeName = typeName[strings.LastIndex(typeName, ".")+1:]
	var detail bytes.Buffer
	enc := xml.NewEncoder(&detail)
	start := xml.StartElement{
		Name: xml.Name{Local: typeName + "Fault"},
		Attr: []xml.Attr{
			{Name: xml.Name{Local: "xmlns"}, Value: "urn:vim25"},
			{Name: xml.Name{Local: "xsi:type"}, Value: typeName},
		},
	}
	if err := enc.EncodeElement(fault, start); err != nil {
		log.Printf("lab: encoding fault %s: %v", typeName, err)
	}
	_ = enc.Flush()
	var buf bytes.Buffer
	buf.WriteString(envelopeStart)
	buf.WriteString(`<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>`)
	_ = xml.EscapeText(&buf, []byte(msg))
	buf.WriteString(`</faultstring><detail>`)
	buf.Write(detail.Bytes())
	buf.WriteString(`</detail></soapenv:Fault>`)
	buf.WriteString(envelopeEnd)
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = w.Write(buf.Bytes())
}

// serveFolder is vcsim's datastore file access (/folder/...), behind a session check as
// on vCenter.
func (l *lab) serveFolder(w http.ResponseWriter, r *http.Request) {
	if rec := l.probeSession(r); rec != nil {
		http.Error(w, "not authenticated: log in first and send the vmware_soap_session cookie", http.StatusUnauthorized)
		return
	}
	if r.Method == http.MethodPut || r.Method == http.MethodPost {
		l.mu.Lock()
		defer l.mu.Unlock()
		defer l.saveChangeLog()
	}
	l.svc.ServeDatastore(w, r)
}

// fillDeviceInfo gives edited devices an empty deviceInfo when the client sent none.
func fillDeviceInfo(spec *types.VirtualMachineConfigSpec) bool {
	changed := false
	for _, change := range spec.DeviceChange {
		dspec := change.GetVirtualDeviceConfigSpec()
		if dspec.Device == nil || dspec.Operation != types.VirtualDeviceConfigSpecOperationEdit {
			continue
		}
		if d := dspec.Device.GetVirtualDevice(); d.DeviceInfo == nil {
			d.DeviceInfo = &types.Description{}
			changed = true
		}
	}
	return changed
}

// encodeRequest re-encodes a request body the way govmomi's client does.
func encodeRequest(body interface{}) ([]byte, error) {
	return xml.Marshal(soap.Envelope{Body: body})
}

// checkConfigSpec refuses what would make vcsim drop the connection: NICs on networks
// that do not exist and disks on datastores that do not exist.
func checkConfigSpec(spec *types.VirtualMachineConfigSpec) (types.BaseMethodFault, string) {
	for _, change := range spec.DeviceChange {
		dspec := change.GetVirtualDeviceConfigSpec()
		if dspec.Device == nil {
			continue
		}
		if dspec.Operation == types.VirtualDeviceConfigSpecOperationRemove {
			continue
		}
		switch b := dspec.Device.GetVirtualDevice().Backing.(type) {
		case *types.VirtualEthernetCardNetworkBackingInfo:
			if !networkExists(b.DeviceName) {
				return &types.NotFound{}, fmt.Sprintf("The object or item referred to could not be found: network %q", b.DeviceName)
			}
		case *types.VirtualEthernetCardDistributedVirtualPortBackingInfo:
			if dvPortgroupName(b.Port.PortgroupKey) == "" {
				return &types.NotFound{}, fmt.Sprintf("The object or item referred to could not be found: portgroup %q", b.Port.PortgroupKey)
			}
		case types.BaseVirtualDeviceFileBackingInfo:
			name := b.GetVirtualDeviceFileBackingInfo().FileName
			if f, msg := checkDatastorePath(name); f != nil {
				return f, msg
			}
		}
	}
	if spec.Files != nil && spec.Files.VmPathName != "" {
		if f, msg := checkDatastorePath(spec.Files.VmPathName); f != nil {
			return f, msg
		}
	}
	return nil, ""
}

func checkDatastorePath(name string) (types.BaseMethodFault, string) {
	if name == "" {
		return nil, ""
	}
	if !strings.HasPrefix(name, "[") || !strings.Contains(name, "]") {
		return &types.InvalidDatastorePath{DatastorePath: name}, fmt.Sprintf("Invalid datastore path '%s'.", name)
	}
	ds := name[1:strings.Index(name, "]")]
	if _, ok := datastoreDir(ds); !ok {
		return &types.InvalidDatastore{Name: ds}, fmt.Sprintf("Invalid datastore '%s'.", ds)
	}
	return nil, ""
}

func networkExists(name string) bool {
	for _, kind := range []string{"Network", "DistributedVirtualPortgroup", "OpaqueNetwork"} {
		for _, e := range simulator.Map.All(kind) {
			if e.Entity().Name == name {
				return true
			}
		}
	}
	return false
}
