package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// serveAdmin answers the lab-only endpoints under /lab/ used by safekeeping-lab. They need
// the lab password in the X-Lab-Password header.
func (l *lab) serveAdmin(w http.ResponseWriter, r *http.Request) {
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("X-Lab-Password")), []byte(l.password)) != 1 {
		adminError(w, http.StatusUnauthorized, "missing or wrong X-Lab-Password")
		return
	}
	if strings.TrimPrefix(r.URL.Path, "/lab/") == "disk-digest" {
		// Hashing a big disk takes a while; it runs without the lab lock.
		q := r.URL.Query()
		l.mu.Lock()
		local, err := l.digestTarget(q.Get("path"), q.Get("vm"), q.Get("disk"))
		l.mu.Unlock()
		if err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		sum, capacity, err := diskDigest(local)
		if err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]interface{}{"sha256": sum, "capacity": capacity, "local_path": local})
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.syncAll()
	var res interface{}
	var err error
	switch strings.TrimPrefix(r.URL.Path, "/lab/") {
	case "status":
		res = l.status()
	case "vm-info":
		res, err = l.vmInfo(r.URL.Query().Get("vm"))
	case "create-vm":
		var req createVMRequest
		if err = decode(r, &req); err == nil {
			res, err = l.createVM(r.Context(), &req)
		}
	case "place-vm":
		var req placeVMRequest
		if err = decode(r, &req); err == nil {
			res, err = l.placeVM(r.Context(), &req)
		}
	case "guest-write":
		var req guestWriteRequest
		if err = decode(r, &req); err == nil {
			res, err = l.guestWrite(&req)
		}
	case "power":
		var req powerRequest
		if err = decode(r, &req); err == nil {
			res, err = l.power(r.Context(), &req)
		}
	case "create-vapp":
		var req createVAppRequest
		if err = decode(r, &req); err == nil {
			res, err = l.createVAppAdmin(r.Context(), &req)
		}
	case "vapp-info":
		res, err = l.vappInfo(r.URL.Query().Get("vapp"))
	case "vapp-power":
		var req vappPowerRequest
		if err = decode(r, &req); err == nil {
			res, err = l.vappPower(r.Context(), &req)
		}
	case "tag":
		var req tagRequest
		if err = decode(r, &req); err == nil {
			res, err = l.tagObject(r.Context(), &req)
		}
	case "shutdown":
		res = map[string]string{"state": "stopping"}
		if l.shutdown != nil {
			defer l.shutdown()
		}
	case "secure-vm":
		var req secureVMRequest
		if err = decode(r, &req); err == nil {
			res, err = l.secureVM(&req)
		}
	case "set-policy":
		var req setPolicyRequest
		if err = decode(r, &req); err == nil {
			res, err = l.setPolicy(&req)
		}
	case "knobs":
		if r.Method == http.MethodPost {
			err = decode(r, &l.knobs)
		}
		res = l.knobs
	default:
		adminError(w, http.StatusNotFound, "no such lab endpoint: "+r.URL.Path)
		return
	}
	l.syncAll() // also saves the change log after guest writes
	if err != nil {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(res)
}

func decode(r *http.Request, v interface{}) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad request body: %v", err)
	}
	return nil
}

func adminError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// findVM finds a VM by name (or moref value) among every VM, restored ones included.
func findVM(name string) (*simulator.VirtualMachine, error) {
	if name == "" {
		return nil, fmt.Errorf("no VM name given")
	}
	var found []*simulator.VirtualMachine
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm, ok := e.(*simulator.VirtualMachine)
		if ok && (vm.Name == name || vm.Self.Value == name) {
			found = append(found, vm)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("no VM named %q", name)
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("%d VMs are named %q; use the moref", len(found), name)
}

type statusVM struct {
	Name       string `json:"name"`
	Moref      string `json:"moref"`
	PowerState string `json:"power_state"`
}

func (l *lab) status() interface{} {
	var vms []statusVM
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		simulator.Map.WithLock(vm, func() {
			vms = append(vms, statusVM{Name: vm.Name, Moref: vm.Self.Value, PowerState: string(vm.Runtime.PowerState)})
		})
	}
	var vapps []statusVApp
	for _, e := range simulator.Map.All("VirtualApp") {
		a, ok := e.(*simulator.VirtualApp)
		if !ok {
			continue
		}
		simulator.Map.WithLock(a, func() {
			v := statusVApp{Name: a.Name, Moref: a.Self.Value}
			for _, vm := range a.Vm {
				v.VMs = append(v.VMs, vm.Value)
			}
			vapps = append(vapps, v)
		})
	}
	return map[string]interface{}{"vms": vms, "vapps": vapps, "first_class_disks": len(l.fcds),
		"knobs": l.knobs, "snapshots_frozen": len(l.snaps), "disks_tracked": len(l.disks)}
}

type statusVApp struct {
	Name  string   `json:"name"`
	Moref string   `json:"moref"`
	VMs   []string `json:"vms"`
}

type createVMRequest struct {
	Name       string   `json:"name"`
	Disks      []int64  `json:"disks"`
	Nics       []string `json:"nics"`
	Datastore  string   `json:"datastore"`
	Controller string   `json:"controller"`
	NicType    string   `json:"nic_type"`
	GuestID    string   `json:"guest_id"`
	Firmware   string   `json:"firmware"`
	CPUs       int32    `json:"cpus"`
	MemoryMB   int64    `json:"memory_mb"`
	PowerOn    *bool    `json:"power_on"`
	// IndependentDisks are positions of disks made independent_persistent.
	IndependentDisks []int `json:"independent_disks"`

	// vapp, when set, makes the VM a child of this vApp (CreateChildVM_Task).
	vapp *types.ManagedObjectReference
}

func (l *lab) createVM(ctx context.Context, req *createVMRequest) (interface{}, error) {
	if req.Name == "" {
		return nil, fmt.Errorf("a VM name is required")
	}
	if _, err := findVM(req.Name); err == nil {
		return nil, fmt.Errorf("a VM named %q already exists", req.Name)
	}
	if req.Datastore == "" {
		req.Datastore = labDatastores[0]
	}
	if _, ok := datastoreDir(req.Datastore); !ok {
		return nil, fmt.Errorf("no datastore named %q", req.Datastore)
	}
	if req.Controller == "" {
		req.Controller = "pvscsi"
	}
	if req.NicType == "" {
		req.NicType = "vmxnet3"
	}
	if req.GuestID == "" {
		req.GuestID = "otherGuest64"
	}
	if req.Firmware == "" {
		req.Firmware = "bios"
	}
	if req.CPUs == 0 {
		req.CPUs = 2
	}
	if req.MemoryMB == 0 {
		req.MemoryMB = 1024
	}
	if len(req.Disks) > 15 {
		return nil, fmt.Errorf("at most 15 disks on one controller")
	}
	finder := find.NewFinder(l.client, false)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		return nil, err
	}
	finder.SetDatacenter(dc)
	folders, err := dc.Folders(ctx)
	if err != nil {
		return nil, err
	}
	pool, err := finder.DefaultResourcePool(ctx)
	if err != nil {
		return nil, err
	}
	var devices object.VirtualDeviceList
	ctrl, err := devices.CreateSCSIController(req.Controller)
	if err != nil {
		return nil, fmt.Errorf("controller %q: %v (use pvscsi, lsilogic, lsilogic-sas or buslogic)", req.Controller, err)
	}
	ctrl.GetVirtualDevice().Key = -100
	devices = append(devices, ctrl)
	for i, size := range req.Disks {
		if size <= 0 || size%512 != 0 {
			return nil, fmt.Errorf("disk %d: size %d is not a positive multiple of 512", i, size)
		}
		unit := int32(i)
		if unit >= 7 {
			unit++
		}
		mode := string(types.VirtualDiskModePersistent)
		for _, n := range req.IndependentDisks {
			if n == i {
				mode = string(types.VirtualDiskModeIndependent_persistent)
			}
		}
		devices = append(devices, &types.VirtualDisk{
			VirtualDevice: types.VirtualDevice{
				Key:           int32(-200 - i),
				ControllerKey: -100,
				UnitNumber:    &unit,
				Backing: &types.VirtualDiskFlatVer2BackingInfo{
					VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: fmt.Sprintf("[%s]", req.Datastore)},
					DiskMode:                     mode,
					ThinProvisioned:              types.NewBool(true),
				},
			},
			CapacityInBytes: size,
			CapacityInKB:    (size + 1023) / 1024,
		})
	}
	for i, netName := range req.Nics {
		net, err := finder.Network(ctx, netName)
		if err != nil {
			return nil, fmt.Errorf("network %q: %v", netName, err)
		}
		backing, err := net.EthernetCardBackingInfo(ctx)
		if err != nil {
			return nil, err
		}
		nic, err := object.EthernetCardTypes().CreateEthernetCard(req.NicType, backing)
		if err != nil {
			return nil, fmt.Errorf("nic type %q: %v (use e1000, e1000e or vmxnet3)", req.NicType, err)
		}
		nic.GetVirtualDevice().Key = int32(-300 - i)
		devices = append(devices, nic)
	}
	changes, err := devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)
	if err != nil {
		return nil, err
	}
	for _, c := range changes {
		if _, ok := c.GetVirtualDeviceConfigSpec().Device.(*types.VirtualDisk); ok {
			c.GetVirtualDeviceConfigSpec().FileOperation = types.VirtualDeviceConfigSpecFileOperationCreate
		}
	}
	spec := types.VirtualMachineConfigSpec{
		Name:                  req.Name,
		GuestId:               req.GuestID,
		Firmware:              req.Firmware,
		NumCPUs:               req.CPUs,
		MemoryMB:              req.MemoryMB,
		Version:               "vmx-13",
		ChangeTrackingEnabled: types.NewBool(false),
		Files:                 &types.VirtualMachineFileInfo{VmPathName: fmt.Sprintf("[%s]", req.Datastore)},
		DeviceChange:          changes,
	}
	var task *object.Task
	if req.vapp != nil {
		task, err = object.NewVirtualApp(l.client, *req.vapp).CreateChildVM(ctx, spec, nil)
	} else {
		task, err = folders.VmFolder.CreateVM(ctx, spec, pool, nil)
	}
	if err != nil {
		return nil, err
	}
	info, err := task.WaitForResult(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("CreateVM: %v", err)
	}
	ref := info.Result.(types.ManagedObjectReference)
	if req.vapp != nil {
		l.adoptChildVM(*req.vapp, ref)
	}
	vm := object.NewVirtualMachine(l.client, ref)
	if req.PowerOn == nil || *req.PowerOn {
		pt, err := vm.PowerOn(ctx)
		if err == nil {
			_, err = pt.WaitForResult(ctx, nil)
		}
		if err != nil {
			return nil, fmt.Errorf("PowerOn: %v", err)
		}
	}
	return map[string]string{"moref": ref.Value, "name": req.Name}, nil
}

type guestWriteRequest struct {
	Path   string `json:"path"`
	VM     string `json:"vm"`
	Disk   int    `json:"disk"`
	Offset int64  `json:"offset"`
	Len    int64  `json:"len"`
	Seed   uint64 `json:"seed"`
	Zero   bool   `json:"zero"`
	// FromFile copies the first Len bytes of this local file (a disk image built by a test)
	// instead of the generated pattern.
	FromFile string `json:"from_file,omitempty"`
}

// guestPattern fills buf with the lab's deterministic guest data: the concatenation of
// SHA-256(le64(seed) || le64(k)) for k = 0, 1, 2, ..., starting at byte pos of the stream.
func guestPattern(buf []byte, seed uint64, pos int64) {
	var in [16]byte
	binary.LittleEndian.PutUint64(in[:8], seed)
	for i := 0; i < len(buf); {
		k := (pos + int64(i)) / 32
		binary.LittleEndian.PutUint64(in[8:], uint64(k))
		h := sha256.Sum256(in[:])
		i += copy(buf[i:], h[(pos+int64(i))%32:])
	}
}

func (l *lab) guestWrite(req *guestWriteRequest) (interface{}, error) {
	d, st, err := l.writeTarget(req)
	if err != nil {
		return nil, err
	}
	if req.Offset < 0 || req.Len < 0 || req.Offset+req.Len > st.capacity || req.Offset+req.Len < req.Offset {
		return nil, fmt.Errorf("write of %d bytes at %d is outside the disk (capacity %d)", req.Len, req.Offset, st.capacity)
	}
	local, err := l.localPath(d.fileName)
	if err != nil {
		return nil, err
	}
	desc, err := readDescriptorFile(local)
	if err != nil {
		return nil, err
	}
	flat, err := flatPath(local, desc)
	if err != nil {
		return nil, err
	}
	// Through the disk's chain: after a snapshot the write lands in the current delta and
	// the frozen files below stay as they were.
	f, err := openChain(local, true)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var src *os.File
	if req.FromFile != "" {
		if src, err = os.Open(req.FromFile); err != nil {
			return nil, err
		}
		defer src.Close()
	}
	buf := make([]byte, 1<<20)
	for done := int64(0); done < req.Len; {
		n := int64(len(buf))
		if req.Len-done < n {
			n = req.Len - done
		}
		chunk := buf[:n]
		if src != nil {
			if _, err := src.ReadAt(chunk, done); err != nil {
				return nil, fmt.Errorf("reading %s at %d: %v", req.FromFile, done, err)
			}
		} else if req.Zero {
			for i := range chunk {
				chunk[i] = 0
			}
		} else {
			guestPattern(chunk, req.Seed, done)
		}
		if err := f.WriteAt(chunk, req.Offset+done); err != nil {
			return nil, err
		}
		done += n
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	changed := 0
	if st.epoch != "" && req.Len > 0 {
		for b := req.Offset / blockSize; b <= (req.Offset+req.Len-1)/blockSize; b++ {
			st.stamps[b] = st.seq
			changed++
		}
	}
	return map[string]interface{}{"path": d.fileName, "flat": flat, "tracked_blocks": changed}, nil
}

// writeTarget finds the disk a guest write goes to: a VM's disk N, or any disk by path
// (first class disks).
func (l *lab) writeTarget(req *guestWriteRequest) (diskView, *diskState, error) {
	if req.Path != "" {
		if f, msg := checkDatastorePath(req.Path); f != nil {
			return diskView{}, nil, fmt.Errorf("%s", msg)
		}
		desc, err := l.readDescriptorAt(req.Path)
		if err != nil {
			return diskView{}, nil, err
		}
		d := diskView{fileName: req.Path, capacity: desc.Capacity(), adapter: "lsilogic"}
		st, err := l.ensureDisk(d)
		return d, st, err
	}
	vm, err := findVM(req.VM)
	if err != nil {
		return diskView{}, nil, err
	}
	var disks []diskView
	simulator.Map.WithLock(vm, func() { disks = vmDisks(vm) })
	if req.Disk < 0 || req.Disk >= len(disks) {
		return diskView{}, nil, fmt.Errorf("VM %s has %d disks; disk %d does not exist", vm.Name, len(disks), req.Disk)
	}
	d := disks[req.Disk]
	st := l.disks[d.fileName]
	if st == nil {
		return diskView{}, nil, fmt.Errorf("disk %s has no lab record", d.fileName)
	}
	return d, st, nil
}

type powerRequest struct {
	VM    string `json:"vm"`
	State string `json:"state"`
}

func (l *lab) power(ctx context.Context, req *powerRequest) (interface{}, error) {
	vm, err := findVM(req.VM)
	if err != nil {
		return nil, err
	}
	o := object.NewVirtualMachine(l.client, vm.Self)
	var t *object.Task
	switch req.State {
	case "on":
		t, err = o.PowerOn(ctx)
	case "off":
		t, err = o.PowerOff(ctx)
	default:
		return nil, fmt.Errorf("power state must be on or off, not %q", req.State)
	}
	if err == nil {
		_, err = t.WaitForResult(ctx, nil)
	}
	if err != nil {
		return nil, err
	}
	return map[string]string{"moref": vm.Self.Value, "state": req.State}, nil
}
