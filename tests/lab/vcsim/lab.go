package main

import (
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

// lab holds what the lab adds to the simulator. mu serialises every mutating SOAP call and
// admin operation, so guest writes, snapshot freezes and change tracking never interleave.
type lab struct {
	mu       sync.Mutex
	dir      string
	user     string
	password string
	svc      *simulator.Service
	client   *vim25.Client

	disks map[string]*diskState // by the current disk's datastore path
	snaps map[string]*snapState // by snapshot moref value
	vmx   map[string]string     // last .vmx written, by VM moref value
	fcds  map[string]string     // first class disk id -> descriptor "[ds] fcd/ID.vmdk"
	vapps map[string]*vappState // by vApp moref value

	knobs knobs
	vslm  vslmTasks

	// written is the last change-tracking state saved to DIR/lab-state/cbt.json.
	written string

	// shutdown asks the server to stop (the /lab/shutdown endpoint).
	shutdown func()
}

// knobs are fault-injection and tuning switches set through /lab/knobs.
type knobs struct {
	// FailQuiescedSnapshots makes CreateSnapshot with quiesce=true fail like VMware Tools does.
	FailQuiescedSnapshots bool `json:"fail_quiesced_snapshots"`
	// MaxChangedAreas caps the areas in one QueryChangedDiskAreas reply (vCenter returns
	// partial results and the client asks again from startOffset+length).
	MaxChangedAreas int `json:"max_changed_areas"`
	// DeniedPrivileges are privilege ids HasPrivilegeOnEntities reports as not granted, so
	// that tests can play a vCenter user whose role lacks them (vcsim grants everything).
	DeniedPrivileges []string `json:"denied_privileges"`
}

// diskState is the lab's record of one VM disk: identity and change tracking.
type diskState struct {
	path     string // "[ds] folder/name.vmdk"
	uuidDDB  string
	uuidAPI  string
	capacity int64
	epoch    string // change tracking id; "" while tracking is off
	seq      uint64
	stamps   map[int64]uint64 // 64 KiB block -> seq of its last write
}

func (d *diskState) changeID() string {
	if d.epoch == "" {
		return ""
	}
	return fmt.Sprintf("%s/%d", d.epoch, d.seq)
}

// snapState is a snapshot's frozen disks by device key (a first class disk snapshot has
// one, under key 0, and fcdID set).
type snapState struct {
	vm    types.ManagedObjectReference
	fcdID string
	disks map[int32]*frozenDisk
}

// frozenDisk is one disk as a snapshot froze it.
type frozenDisk struct {
	path     string // the file the snapshot froze: "[ds] folder/name.vmdk" or a delta below the VM's current one
	source   string // the VM disk it was frozen from
	capacity int64
	epoch    string
	seq      uint64
	stamps   map[int64]uint64
}

func newLab(dir, user, password string, svc *simulator.Service, client *vim25.Client) *lab {
	return &lab{
		dir:      dir,
		user:     user,
		password: password,
		svc:      svc,
		client:   client,
		disks:    map[string]*diskState{},
		snaps:    map[string]*snapState{},
		vmx:      map[string]string{},
		fcds:     map[string]string{},
		vapps:    map[string]*vappState{},
		knobs:    knobs{MaxChangedAreas: 2048},
	}
}

// localPath resolves "[ds] path" to a file under the datastore's directory.
func (l *lab) localPath(dsPath string) (string, error) {
	var p object.DatastorePath
	if !p.FromString(dsPath) {
		return "", fmt.Errorf("not a datastore path: %q", dsPath)
	}
	dir, ok := datastoreDir(p.Datastore)
	if !ok {
		return "", fmt.Errorf("no datastore named %q", p.Datastore)
	}
	clean := filepath.Clean("/" + p.Path)
	return filepath.Join(dir, clean), nil
}

// datastoreDir finds a datastore's backing directory by name.
func datastoreDir(name string) (string, bool) {
	for _, e := range simulator.Map.All("Datastore") {
		ds := e.(*simulator.Datastore)
		if ds.Name == name {
			return ds.Info.GetDatastoreInfo().Url, true
		}
	}
	return "", false
}

// diskView is what the sync pass reads from a VM's disk device.
type diskView struct {
	key      int32
	fileName string
	capacity int64
	adapter  string
}

func diskCapacity(d *types.VirtualDisk) int64 {
	if d.CapacityInBytes > 0 {
		return d.CapacityInBytes
	}
	return d.CapacityInKB * 1024
}

func adapterFor(devices object.VirtualDeviceList, d *types.VirtualDisk) string {
	switch devices.FindByKey(d.ControllerKey).(type) {
	case *types.VirtualIDEController:
		return "ide"
	case *types.VirtualBusLogicController:
		return "buslogic"
	case *types.ParaVirtualSCSIController:
		return "pvscsi"
	case *types.VirtualLsiLogicSASController:
		return "lsilogic"
	default:
		return "lsilogic"
	}
}

// vmDisks lists the VM's flat disks in device order: by controller (in the order the
// controllers appear in config.hardware.device), then unit number. vcsim moves an edited
// device to the end of the list; this order does not change. Call with the VM locked.
func vmDisks(vm *simulator.VirtualMachine) []diskView {
	if vm.Config == nil {
		return nil
	}
	devices := object.VirtualDeviceList(vm.Config.Hardware.Device)
	var out []diskView
	for _, dev := range orderedDisks(devices) {
		d, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		b, ok := d.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok {
			continue
		}
		out = append(out, diskView{key: d.Key, fileName: b.FileName, capacity: diskCapacity(d), adapter: adapterFor(devices, d)})
	}
	return out
}

// syncAll brings the files and the lab's records in line with the inventory: disk files
// with real descriptors, change tracking ids, .vmx/.nvram files, and the deltas of removed
// snapshots consolidated. Call with l.mu held and no simulator locks.
func (l *lab) syncAll() {
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm, ok := e.(*simulator.VirtualMachine)
		if !ok {
			continue
		}
		l.syncVM(vm)
	}
	l.forgetGoneFCDs()
	l.sweepFCDSnapshots()
	l.sweepVApps()
	for ref, s := range l.snaps {
		if s.fcdID != "" {
			continue
		}
		if simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachineSnapshot", Value: ref}) != nil {
			continue
		}
		// The frozen files are the VM's own disk chain: consolidate, never delete.
		l.releaseSnapshot(s)
		delete(l.snaps, ref)
	}
	for p := range l.disks {
		local, err := l.localPath(p)
		if err != nil {
			delete(l.disks, p)
			continue
		}
		if _, err := os.Stat(local); os.IsNotExist(err) {
			delete(l.disks, p)
		}
	}
	l.saveChangeLog()
}

func (l *lab) removeDiskFiles(dsPath string) {
	local, err := l.localPath(dsPath)
	if err != nil {
		return
	}
	if d, err := readDescriptorFile(local); err == nil {
		if flat, err := flatPath(local, d); err == nil {
			_ = os.Remove(flat)
		}
	}
	_ = os.Remove(local)
}

func (l *lab) syncVM(vm *simulator.VirtualMachine) {
	defer l.syncLayout(vm)
	var disks []diskView
	var ctk bool
	simulator.Map.WithLock(vm, func() {
		disks = vmDisks(vm)
		ctk = vm.Config != nil && vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
	})
	states := map[int32]*diskState{}
	for _, d := range disks {
		st, err := l.ensureDisk(d)
		if err != nil {
			log.Printf("lab: %s: disk %s: %v", vm.Reference().Value, d.fileName, err)
			continue
		}
		if ctk && st.epoch == "" {
			st.epoch = spacedHex(randomBytes(16))
			st.seq = 1
			st.stamps = map[int64]uint64{}
		} else if !ctk && st.epoch != "" {
			st.epoch, st.seq, st.stamps = "", 0, nil
		}
		states[d.key] = st
	}
	var vmxPath, vmxText, nvramPath, name string
	simulator.Map.WithLock(vm, func() {
		if vm.Config == nil {
			return
		}
		for _, dev := range vm.Config.Hardware.Device {
			d, ok := dev.(*types.VirtualDisk)
			if !ok {
				continue
			}
			st := states[d.Key]
			b, ok := d.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
			if st == nil || !ok {
				continue
			}
			b.Uuid = st.uuidAPI
			b.ChangeId = st.changeID()
			b.ThinProvisioned = types.NewBool(true)
		}
		vmxPath = vm.Config.Files.VmPathName
		name = vm.Name
		vmxText = renderVMX(vm)
	})
	if vmxPath == "" {
		return
	}
	local, err := l.localPath(vmxPath)
	if err != nil {
		return
	}
	if filepath.Ext(local) != ".vmx" {
		return
	}
	if l.vmx[vm.Reference().Value] != vmxText {
		if err := writeFileAtomic(local, []byte(vmxText), 0o644); err != nil {
			log.Printf("lab: writing %s: %v", local, err)
		} else {
			l.vmx[vm.Reference().Value] = vmxText
		}
	}
	nvramPath = filepath.Join(filepath.Dir(local), name+".nvram")
	if st, err := os.Stat(nvramPath); err == nil && st.Size() == 0 {
		if err := writeFileAtomic(nvramPath, renderNVRAM(vm.Reference().Value), 0o644); err != nil {
			log.Printf("lab: writing %s: %v", nvramPath, err)
		}
	}
}

// ensureDisk gives a disk a real descriptor and a sparse flat extent of its capacity (the
// simulator only creates empty files) and returns the lab's record of it.
func (l *lab) ensureDisk(d diskView) (*diskState, error) {
	local, err := l.localPath(d.fileName)
	if err != nil {
		return nil, err
	}
	st := l.disks[d.fileName]
	info, err := os.Stat(local)
	if err != nil {
		return nil, err
	}
	if info.Size() == 0 {
		ddb, api := newDiskUUID()
		flat := flatNameFor(filepath.Base(local))
		if err := sizeFlat(filepath.Join(filepath.Dir(local), flat), d.capacity); err != nil {
			return nil, err
		}
		if err := writeFileAtomic(local, renderDescriptor(d.capacity, flat, ddb, d.adapter), 0o600); err != nil {
			return nil, err
		}
		st = &diskState{path: d.fileName, uuidDDB: ddb, uuidAPI: api, capacity: (d.capacity + 511) / 512 * 512}
		l.disks[d.fileName] = st
		return st, nil
	}
	desc, err := readDescriptorFile(local)
	if err != nil {
		return nil, err
	}
	if st == nil {
		ddb := desc.UUID
		api, ok := canonicalFromSpaced(ddb)
		if !ok {
			ddb, api = newDiskUUID()
		}
		st = &diskState{path: d.fileName, uuidDDB: ddb, uuidAPI: api, capacity: desc.Capacity()}
		l.disks[d.fileName] = st
	}
	if d.capacity > desc.Capacity() && len(desc.Extents) == 1 && desc.ParentHint == "" {
		// Disk extended through ReconfigVM: grow the extent and the descriptor.
		flat, err := flatPath(local, desc)
		if err != nil {
			return nil, err
		}
		if err := sizeFlat(flat, d.capacity); err != nil {
			return nil, err
		}
		adapter := desc.AdapterType
		if adapter == "" {
			adapter = d.adapter
		}
		if err := writeFileAtomic(local, renderDescriptor(d.capacity, desc.Extents[0].File, st.uuidDDB, adapter), 0o600); err != nil {
			return nil, err
		}
		st.capacity = (d.capacity + 511) / 512 * 512
	}
	return st, nil
}

// sizeFlat creates or extends a sparse flat extent to capacity (rounded up to a sector).
func sizeFlat(path string, capacity int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	size := (capacity + 511) / 512 * 512
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() < size {
		if err := f.Truncate(size); err != nil {
			return err
		}
	}
	return f.Sync()
}

// materializeFCD gives a first class disk made by CreateDisk_Task a real descriptor and a
// sparse flat extent of its capacity.
func (l *lab) materializeFCD(res types.AnyType) {
	var obj *types.VStorageObject
	switch x := res.(type) {
	case *types.VStorageObject:
		obj = x
	case types.VStorageObject:
		obj = &x
	default:
		return
	}
	b, ok := obj.Config.Backing.(*types.BaseConfigInfoDiskFileBackingInfo)
	if !ok {
		return
	}
	d := diskView{fileName: b.FilePath, capacity: obj.Config.CapacityInMB << 20, adapter: "lsilogic"}
	if _, err := l.ensureDisk(d); err != nil {
		log.Printf("lab: first class disk %s: %v", b.FilePath, err)
		return
	}
	l.fcds[obj.Config.Id.Id] = b.FilePath
	l.enableFCDTracking(obj)
}

// orderedDisks returns the disks of a device list by controller position, then unit.
func orderedDisks(devices object.VirtualDeviceList) []types.BaseVirtualDevice {
	ctrlPos := map[int32]int{}
	for i, d := range devices {
		if _, ok := d.(types.BaseVirtualController); ok {
			ctrlPos[d.GetVirtualDevice().Key] = i
		}
	}
	var disks []types.BaseVirtualDevice
	for _, d := range devices {
		if _, ok := d.(*types.VirtualDisk); ok {
			disks = append(disks, d)
		}
	}
	unit := func(d types.BaseVirtualDevice) int32 {
		if u := d.GetVirtualDevice().UnitNumber; u != nil {
			return *u
		}
		return 1 << 30
	}
	sort.SliceStable(disks, func(i, j int) bool {
		a, b := disks[i].GetVirtualDevice(), disks[j].GetVirtualDevice()
		if ctrlPos[a.ControllerKey] != ctrlPos[b.ControllerKey] {
			return ctrlPos[a.ControllerKey] < ctrlPos[b.ControllerKey]
		}
		return unit(disks[i]) < unit(disks[j])
	})
	return disks
}

// ctkRecord is one disk's change tracking state as saved in DIR/lab-state/cbt.json.
type ctkRecord struct {
	ChangeID string           `json:"change_id"`
	Capacity int64            `json:"capacity"`
	Blocks   map[int64]uint64 `json:"blocks"`
}

// saveChangeLog writes every tracked disk's change log (block -> sequence number of its
// last write, 64 KiB blocks) and every snapshot's recorded change id to
// DIR/lab-state/cbt.json when it changed. The simulator keeps its inventory in memory, so
// the file is for inspection: a restarted lab is a new vCenter.
func (l *lab) saveChangeLog() {
	l.syncVDDKConf()
	state := map[string]interface{}{}
	disks := map[string]ctkRecord{}
	for p, st := range l.disks {
		if st.epoch != "" {
			disks[p] = ctkRecord{ChangeID: st.changeID(), Capacity: st.capacity, Blocks: st.stamps}
		}
	}
	snaps := map[string]map[string]string{}
	for key, s := range l.snaps {
		m := map[string]string{}
		for dk, fd := range s.disks {
			id := ""
			if fd.epoch != "" {
				id = fmt.Sprintf("%s/%d", fd.epoch, fd.seq)
			}
			m[fmt.Sprintf("%d %s", dk, fd.path)] = id
		}
		snaps[key] = m
	}
	state["disks"] = disks
	state["snapshots"] = snaps
	data, err := json.MarshalIndent(state, "", " ")
	if err != nil || string(data) == l.written {
		return
	}
	dir := filepath.Join(l.dir, "lab-state")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		log.Printf("lab: %v", err)
		return
	}
	if err := writeFileAtomic(filepath.Join(dir, "cbt.json"), data, 0o644); err != nil {
		log.Printf("lab: saving the change log: %v", err)
		return
	}
	l.written = string(data)
}
