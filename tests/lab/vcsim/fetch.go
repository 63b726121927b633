package main

import (
	"bytes"
	"net/http"
	"reflect"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"
)

// fetchResponse is vCenter's answer to a Fetch of an unset property: no returnval.
type fetchResponse struct{}

// serveFetch answers the undocumented `Fetch(prop)` method, pyVmomi's property accessor
// (`vm.snapshot`, `vm.config`, ...), where vcsim's own Fetch falls short:
//
//   - an unset property (`snapshot` of a VM without snapshots, `parentVApp` of a VM outside
//     a vApp) is answered with an empty FetchResponse, which pyVmomi reads as None, as
//     vCenter does; vcsim indexes an empty RetrievePropertiesEx result and panics;
//   - like vCenter, only `content` of the ServiceInstance may be fetched without a session
//     (vcsim answers every Fetch without one).
//
// Everything else goes to vcsim's Fetch. It returns false when the request is not a Fetch
// the lab can read (the caller then passes it on).
func (l *lab) serveFetch(w http.ResponseWriter, r *http.Request, body []byte, method *simulator.Method) bool {
	this, prop, ok := fetchArgs(method.Body)
	if !ok {
		return false
	}
	if this.Type == "ServiceInstance" && prop == "content" {
		return false
	}
	if rec := l.probeSession(r); rec != nil {
		copyRecorded(w, rec)
		return true
	}
	switch this.Type {
	case "ManagedEntity", "ComputeResource":
		// Super class types: vcsim's Fetch resolves them itself.
		return false
	}
	req := &types.RetrievePropertiesEx{
		This: types.ManagedObjectReference{Type: "PropertyCollector", Value: "propertyCollector"},
		SpecSet: []types.PropertyFilterSpec{{
			PropSet:   []types.PropertySpec{{Type: this.Type, PathSet: []string{prop}}},
			ObjectSet: []types.ObjectSpec{{Obj: this}},
		}},
	}
	encoded, err := encodeRequest(&methods.RetrievePropertiesExBody{Req: req})
	if err != nil {
		return false
	}
	rec := l.passRecorded(r.Clone(r.Context()), encoded)
	if rec.Code != http.StatusOK {
		// A fault (ManagedObjectNotFound, InvalidType, ...): vcsim's Fetch answers it too.
		return false
	}
	reply := rec.Body.Bytes()
	if bytes.Contains(reply, []byte("<propSet>")) || bytes.Contains(reply, []byte("<missingSet>")) {
		// Set, or an invalid property: vcsim's Fetch returns the value or the fault.
		return false
	}
	writeResponse(w, "FetchResponse", &fetchResponse{})
	return true
}

// fetchArgs reads `_this` and `prop` of a decoded Fetch request. vcsim's Fetch type lives in
// a Go internal package the lab cannot name, so its fields are read by reflection.
func fetchArgs(req interface{}) (types.ManagedObjectReference, string, bool) {
	v := reflect.ValueOf(req)
	if v.Kind() == reflect.Ptr {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return types.ManagedObjectReference{}, "", false
	}
	t, f := v.FieldByName("This"), v.FieldByName("Prop")
	if !t.IsValid() || !f.IsValid() || f.Kind() != reflect.String {
		return types.ManagedObjectReference{}, "", false
	}
	this, ok := t.Interface().(types.ManagedObjectReference)
	return this, f.String(), ok
}
