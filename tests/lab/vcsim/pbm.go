package main

import (
	"bytes"
	"fmt"
	"io/ioutil"
	"net/http"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"

	pbmtypes "github.com/vmware/govmomi/pbm/types"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// The lab's storage policies are govmomi's PBM simulator (served at /pbm, and here at
// /pbm/sdk as vCenter does) with what it lacks added in front: associations. The simulator
// answers PbmQueryAssociatedProfile with nothing and has no PbmQueryAssociatedProfiles; the lab
// keeps the policies set through CreateVM_Task and ReconfigVM_Task profile specs (vmProfile
// for the VM home, a device change's profile for a disk) and through the set-policy admin
// endpoint, answers both queries from them, and mirrors them, by VM name and disk position,
// into DIR/pbm-associations.json for tests.

// labPolicies are the simulator's profiles (govmomi pbm/simulator/profiles.go) by name.
var labPolicies = map[string]string{
	"vSAN Default Storage Policy":            "aa6d5a82-1c88-45da-85d3-3d74b91a5bad",
	"VVol No Requirements Policy":            "f4e5bade-15a2-4805-bf8e-52318c4ce443",
	"VM Encryption Policy":                   "4d5f673c-536f-11e6-beb8-9e71128cae77",
	"Host-local PMem Default Storage Policy": "c268da1b-b343-49f7-a468-b1deeb7078e0",
}

// pbmAssociations maps "vm-N" (VM home) and "vm-N:KEY" (disk) to a profile id.
var pbmAssociations = struct {
	sync.Mutex
	m map[string]string
}{m: map[string]string{}}

func pbmTypeFunc(name string) (reflect.Type, bool) {
	if t, ok := types.TypeFunc()("pbm:" + name); ok {
		return t, ok
	}
	return types.TypeFunc()(name)
}

// servePBM is /pbm/sdk: the session comes from the vcSessionCookie SOAP header, as vCenter's
// PBM wants it.
func (l *lab) servePBM(w http.ResponseWriter, r *http.Request) {
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
	method, err := simulator.UnmarshalBody(pbmTypeFunc, body)
	if err != nil {
		writeFault(w, err.Error(), &types.InvalidRequest{})
		return
	}
	// Only the header authenticates: the HTTP cookie is replaced by it.
	probe := r.Clone(r.Context())
	probe.Header.Del("Cookie")
	if method.Header.Cookie != "" {
		probe.AddCookie(&http.Cookie{Name: soap.SessionCookieName, Value: method.Header.Cookie})
	}
	if method.Name != "PbmRetrieveServiceContent" {
		if rec := l.probeSession(probe); rec != nil {
			copyRecorded(w, rec)
			return
		}
	}
	switch req := method.Body.(type) {
	case *pbmtypes.PbmQueryAssociatedProfiles:
		res := &pbmtypes.PbmQueryAssociatedProfilesResponse{}
		for _, e := range req.Entities {
			res.Returnval = append(res.Returnval, pbmtypes.PbmQueryProfileResult{
				Object:    e,
				ProfileId: associated(e),
			})
		}
		writeResponseNS(w, "urn:pbm", "PbmQueryAssociatedProfilesResponse", res)
		return
	case *pbmtypes.PbmQueryAssociatedProfile:
		writeResponseNS(w, "urn:pbm", "PbmQueryAssociatedProfileResponse",
			&pbmtypes.PbmQueryAssociatedProfileResponse{Returnval: associated(req.Entity)})
		return
	}
	probe.URL.Path = "/pbm"
	probe.Body = ioutil.NopCloser(bytes.NewReader(body))
	probe.ContentLength = int64(len(body))
	l.svc.ServeSDK(w, probe)
}

func associated(e pbmtypes.PbmServerObjectRef) []pbmtypes.PbmProfileId {
	pbmAssociations.Lock()
	defer pbmAssociations.Unlock()
	id, ok := pbmAssociations.m[e.Key]
	if !ok {
		return nil
	}
	return []pbmtypes.PbmProfileId{{UniqueId: id}}
}

// definedProfile is the profile id of the first VirtualMachineDefinedProfileSpec, "-" for an
// empty profile spec (which removes the policy), "" when there is none.
func definedProfile(specs []types.BaseVirtualMachineProfileSpec) string {
	for _, s := range specs {
		switch p := s.(type) {
		case *types.VirtualMachineDefinedProfileSpec:
			return p.ProfileId
		case *types.VirtualMachineEmptyProfileSpec:
			return "-"
		}
	}
	return ""
}

func specHasProfiles(spec *types.VirtualMachineConfigSpec) bool {
	if len(spec.VmProfile) > 0 {
		return true
	}
	for _, c := range spec.DeviceChange {
		if len(c.GetVirtualDeviceConfigSpec().Profile) > 0 {
			return true
		}
	}
	return false
}

func vmDiskKeys(ref types.ManagedObjectReference) []int32 {
	vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	if !ok || vm.Config == nil {
		return nil
	}
	var keys []int32
	for _, d := range vm.Config.Hardware.Device {
		if disk, ok := d.(*types.VirtualDisk); ok {
			keys = append(keys, disk.Key)
		}
	}
	return keys
}

// passKeepingProfiles runs CreateVM_Task (this == nil) or ReconfigVM_Task through vcsim and,
// when it succeeded, keeps the policies its spec set. Called with l.mu held.
func (l *lab) passKeepingProfiles(w http.ResponseWriter, r *http.Request, body []byte, this *types.ManagedObjectReference, spec *types.VirtualMachineConfigSpec) {
	before := map[int32]bool{}
	if this != nil {
		for _, k := range vmDiskKeys(*this) {
			before[k] = true
		}
	}
	rec := l.passRecorded(r, body)
	res, ok := taskResult(rec)
	if ok {
		vmRef := this
		if ref, isRef := res.(types.ManagedObjectReference); this == nil && isRef {
			vmRef = &ref
		}
		if vmRef != nil {
			l.keepProfiles(*vmRef, before, spec)
		}
	}
	copyRecorded(w, rec)
}

func (l *lab) keepProfiles(vm types.ManagedObjectReference, before map[int32]bool, spec *types.VirtualMachineConfigSpec) {
	var added []int32
	for _, k := range vmDiskKeys(vm) {
		if !before[k] {
			added = append(added, k)
		}
	}
	pbmAssociations.Lock()
	set := func(key, id string) {
		if id == "-" {
			delete(pbmAssociations.m, key)
		} else if id != "" {
			pbmAssociations.m[key] = id
		}
	}
	set(vm.Value, definedProfile(spec.VmProfile))
	next := 0
	for _, c := range spec.DeviceChange {
		dc := c.GetVirtualDeviceConfigSpec()
		disk, ok := dc.Device.(*types.VirtualDisk)
		if !ok {
			continue
		}
		key := disk.Key
		if dc.Operation == types.VirtualDeviceConfigSpecOperationAdd {
			if next >= len(added) {
				continue
			}
			key = added[next]
			next++
		}
		set(fmt.Sprintf("%s:%d", vm.Value, key), definedProfile(dc.Profile))
	}
	pbmAssociations.Unlock()
	l.savePBMAssociations()
}

// setPolicyRequest is the body of /lab/set-policy: a policy (by name) for a VM's home
// (disk < 0) or its disk N.
type setPolicyRequest struct {
	VM     string `json:"vm"`
	Disk   int    `json:"disk"`
	Policy string `json:"policy"`
}

func (l *lab) setPolicy(req *setPolicyRequest) (interface{}, error) {
	id, ok := labPolicies[req.Policy]
	if !ok {
		var names []string
		for n := range labPolicies {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("no storage policy %q; the lab has: %s", req.Policy, strings.Join(names, ", "))
	}
	vm, err := findVM(req.VM)
	if err != nil {
		return nil, err
	}
	key := vm.Reference().Value
	if req.Disk >= 0 {
		keys := vmDiskKeys(vm.Reference())
		if req.Disk >= len(keys) {
			return nil, fmt.Errorf("VM %s has %d disk(s)", req.VM, len(keys))
		}
		key = fmt.Sprintf("%s:%d", key, keys[req.Disk])
	}
	pbmAssociations.Lock()
	pbmAssociations.m[key] = id
	pbmAssociations.Unlock()
	l.savePBMAssociations()
	return map[string]string{"object": key, "policy_id": id}, nil
}

// vmPolicies is one VM's entry in DIR/pbm-associations.json.
type vmPolicies struct {
	Home  string            `json:"home,omitempty"`
	Disks map[string]string `json:"disks"`
}

// savePBMAssociations writes DIR/pbm-associations.json: per VM name, the policy names of its
// home and of its disks by position.
func (l *lab) savePBMAssociations() {
	names := map[string]string{}
	for n, id := range labPolicies {
		names[id] = n
	}
	name := func(id string) string {
		if n, ok := names[id]; ok {
			return n
		}
		return id
	}
	pbmAssociations.Lock()
	assoc := map[string]string{}
	for k, v := range pbmAssociations.m {
		assoc[k] = v
	}
	pbmAssociations.Unlock()
	out := map[string]vmPolicies{}
	for _, obj := range simulator.Map.All("VirtualMachine") {
		vm, ok := obj.(*simulator.VirtualMachine)
		if !ok {
			continue
		}
		ref := vm.Reference().Value
		p := vmPolicies{Disks: map[string]string{}}
		if id, ok := assoc[ref]; ok {
			p.Home = name(id)
		}
		for i, k := range vmDiskKeys(vm.Reference()) {
			if id, ok := assoc[ref+":"+strconv.Itoa(int(k))]; ok {
				p.Disks[strconv.Itoa(i)] = name(id)
			}
		}
		if p.Home != "" || len(p.Disks) > 0 {
			out[vm.Name] = p
		}
	}
	_ = writeJSONAtomic(filepath.Join(l.dir, "pbm-associations.json"), out)
}
