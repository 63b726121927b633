package main

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vslm"
)

// Tags: govmomi's vAPI simulator (vapi/simulator) is mounted on the lab's server under
// /rest (categories, tags, tag associations). Its session login accepts any non-empty user
// and password; the lab's front checks them against the lab's own, like vCenter.
// First class disks are tagged through VIM (AttachTagToVStorageObject), which the
// simulator records in the same tagging service with object type "fcd".

const restSessionPath = "/rest/com/vmware/cis/session"

// serveRESTSession checks the credentials of a vAPI login before the simulator sees it.
func (l *lab) serveRESTSession(next http.Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Query().Get("~action") == "" {
			u, p, ok := r.BasicAuth()
			if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(l.user)) != 1 ||
				subtle.ConstantTimeCompare([]byte(p), []byte(l.password)) != 1 {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				_ = json.NewEncoder(w).Encode(map[string]interface{}{
					"type":  "com.vmware.vapi.std.errors.unauthenticated",
					"value": map[string]interface{}{"messages": []map[string]string{{"default_message": "Authentication required."}}},
				})
				return
			}
		}
		next.ServeHTTP(w, r)
	}
}

// restCall runs one vAPI call in-process (through the simulator's handlers).
type restCaller struct {
	mux     http.Handler
	session string
}

func (c *restCaller) do(method, path string, body interface{}, out interface{}) error {
	var buf bytes.Buffer
	if body != nil {
		if err := json.NewEncoder(&buf).Encode(body); err != nil {
			return err
		}
	}
	req := httptest.NewRequest(method, "https://lab"+path, &buf)
	req.Header.Set("Content-Type", "application/json")
	if c.session != "" {
		req.Header.Set("vmware-api-session-id", c.session)
	}
	rec := httptest.NewRecorder()
	c.mux.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		return fmt.Errorf("%s %s: HTTP %d %s", method, path, rec.Code, strings.TrimSpace(rec.Body.String()))
	}
	if out == nil {
		return nil
	}
	var v struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		return fmt.Errorf("%s %s: %v", method, path, err)
	}
	if len(v.Value) == 0 {
		return nil
	}
	return json.Unmarshal(v.Value, out)
}

type tagRequest struct {
	Category string `json:"category"`
	Tag      string `json:"tag"`
	Attach   string `json:"attach"`
}

// tagObject creates the category and tag when missing and attaches the tag to a VM, a vApp
// or a first class disk ("vm:NAME", "vapp:NAME", "ivd:ID").
func (l *lab) tagObject(ctx context.Context, req *tagRequest) (interface{}, error) {
	if req.Category == "" || req.Tag == "" {
		return nil, fmt.Errorf("a category and a tag are required")
	}
	kind, name, ok := strings.Cut(req.Attach, ":")
	if req.Attach != "" && (!ok || name == "") {
		return nil, fmt.Errorf("--attach wants vm:NAME, vapp:NAME or ivd:ID, not %q", req.Attach)
	}
	var obj types.ManagedObjectReference
	switch kind {
	case "":
	case "vm":
		vm, err := findVM(name)
		if err != nil {
			return nil, err
		}
		obj = vm.Self
	case "vapp":
		a, err := findVApp(name)
		if err != nil {
			return nil, err
		}
		obj = types.ManagedObjectReference{Type: "VirtualApp", Value: a.Self.Value}
	case "ivd":
		if _, fault := l.fcdDatastore(ctx, name); fault != nil {
			return nil, fmt.Errorf("no first class disk with id %q", name)
		}
	default:
		return nil, fmt.Errorf("--attach wants vm:NAME, vapp:NAME or ivd:ID, not %q", req.Attach)
	}

	c, err := l.restSession()
	if err != nil {
		return nil, err
	}
	defer c.logout()

	categoryID, err := c.findOrCreate("/rest/com/vmware/cis/tagging/category", req.Category, "", func() interface{} {
		return map[string]interface{}{"create_spec": map[string]interface{}{
			"name": req.Category, "description": "created by safekeeping-lab", "cardinality": "MULTIPLE", "associable_types": []string{},
		}}
	})
	if err != nil {
		return nil, err
	}
	tagID, err := c.findOrCreate("/rest/com/vmware/cis/tagging/tag", req.Tag, categoryID, func() interface{} {
		return map[string]interface{}{"create_spec": map[string]interface{}{
			"name": req.Tag, "description": "created by safekeeping-lab", "category_id": categoryID,
		}}
	})
	if err != nil {
		return nil, err
	}
	res := map[string]interface{}{"category_id": categoryID, "tag_id": tagID}
	switch kind {
	case "vm", "vapp":
		err = c.do(http.MethodPost, "/rest/com/vmware/cis/tagging/tag-association/id:"+tagID+"?~action=attach",
			map[string]interface{}{"object_id": map[string]string{"type": obj.Type, "id": obj.Value}}, nil)
		res["object"] = map[string]string{"type": obj.Type, "id": obj.Value}
	case "ivd":
		err = vslm.NewObjectManager(l.client).AttachTag(ctx, name, types.VslmTagEntry{TagName: req.Tag, ParentCategoryName: req.Category})
		res["object"] = map[string]string{"type": "fcd", "id": name}
	}
	if err != nil {
		return nil, fmt.Errorf("attaching tag %s: %v", req.Tag, err)
	}
	return res, nil
}

// restSession logs in to the vAPI simulator in-process with the lab's credentials.
func (l *lab) restSession() (*restCaller, error) {
	c := &restCaller{mux: l.svc.ServeMux}
	login := httptest.NewRequest(http.MethodPost, "https://lab"+restSessionPath, nil)
	login.SetBasicAuth(l.user, l.password)
	rec := httptest.NewRecorder()
	l.svc.ServeMux.ServeHTTP(rec, login)
	var sess struct {
		Value string `json:"value"`
	}
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &sess) != nil {
		return nil, fmt.Errorf("vAPI login: HTTP %d", rec.Code)
	}
	c.session = sess.Value
	return c, nil
}

func (c *restCaller) logout() { _ = c.do(http.MethodDelete, restSessionPath, nil, nil) }

// find looks a category (categoryID "") or a tag of a category up by name; "" when absent.
func (c *restCaller) find(base, name, categoryID string) (string, error) {
	var ids []string
	if err := c.do(http.MethodGet, base, nil, &ids); err != nil {
		return "", err
	}
	for _, id := range ids {
		var obj struct {
			Name       string `json:"name"`
			CategoryID string `json:"category_id"`
		}
		if err := c.do(http.MethodGet, base+"/id:"+id, nil, &obj); err != nil {
			return "", err
		}
		if obj.Name == name && obj.CategoryID == categoryID {
			return id, nil
		}
	}
	return "", nil
}

// fcdsAttachedToTag answers ListVStorageObjectsAttachedToTag as vCenter does: only first
// class disks (vcsim lists every object the tag is attached to, VMs included).
func (l *lab) fcdsAttachedToTag(category, tag string) ([]types.ID, types.BaseMethodFault) {
	c, err := l.restSession()
	if err != nil {
		return nil, &types.SystemError{Reason: err.Error()}
	}
	defer c.logout()
	catID, err := c.find("/rest/com/vmware/cis/tagging/category", category, "")
	if err == nil && catID == "" {
		return nil, &types.NotFound{}
	}
	tagID := ""
	if err == nil {
		tagID, err = c.find("/rest/com/vmware/cis/tagging/tag", tag, catID)
	}
	if err != nil {
		return nil, &types.SystemError{Reason: err.Error()}
	}
	if tagID == "" {
		return nil, &types.NotFound{}
	}
	var objs []struct {
		Type string `json:"type"`
		ID   string `json:"id"`
	}
	if err := c.do(http.MethodPost, "/rest/com/vmware/cis/tagging/tag-association/id:"+tagID+"?~action=list-attached-objects", map[string]interface{}{}, &objs); err != nil {
		return nil, &types.SystemError{Reason: err.Error()}
	}
	var ids []types.ID
	for _, o := range objs {
		if o.Type == "fcd" {
			ids = append(ids, types.ID{Id: o.ID})
		}
	}
	return ids, nil
}

// findOrCreate finds a category (categoryID "") or a tag of a category by name, or creates it.
func (c *restCaller) findOrCreate(base, name, categoryID string, spec func() interface{}) (string, error) {
	id, err := c.find(base, name, categoryID)
	if err != nil || id != "" {
		return id, err
	}
	if err := c.do(http.MethodPost, base, spec(), &id); err != nil {
		return "", err
	}
	return id, nil
}
