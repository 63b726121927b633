package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// guestOS maps API guest ids to .vmx guestOS values for the common cases; others use
// guestIDToVMX's rule.
var guestOS = map[string]string{
	"otherGuest":             "other",
	"otherGuest64":           "other-64",
	"otherLinux64Guest":      "other3xlinux-64",
	"ubuntu64Guest":          "ubuntu-64",
	"debian11_64Guest":       "debian11-64",
	"debian12_64Guest":       "debian12-64",
	"rhel8_64Guest":          "rhel8-64",
	"rhel9_64Guest":          "rhel9-64",
	"centos8_64Guest":        "centos8-64",
	"windows9_64Guest":       "windows9-64",
	"windows2019srv_64Guest": "windows2019srv-64",
	"windows9Server64Guest":  "windows9srv-64",
}

func guestIDToVMX(id string) string {
	if v, ok := guestOS[id]; ok {
		return v
	}
	s := strings.TrimSuffix(id, "Guest")
	if strings.HasSuffix(s, "_64") {
		return strings.TrimSuffix(s, "_64") + "-64"
	}
	if strings.HasSuffix(s, "64") {
		return strings.TrimSuffix(s, "64") + "-64"
	}
	return s
}

func guestIDFromVMX(v string) string {
	for id, x := range guestOS {
		if x == v {
			return id
		}
	}
	if strings.HasSuffix(v, "-64") {
		return strings.TrimSuffix(v, "-64") + "_64Guest"
	}
	return v + "Guest"
}

// controllerPrefix is the .vmx device prefix of a disk controller ("scsi0", "ide1", ...).
func controllerPrefix(c types.BaseVirtualDevice) (string, string) {
	switch x := c.(type) {
	case *types.ParaVirtualSCSIController:
		return fmt.Sprintf("scsi%d", x.BusNumber), "pvscsi"
	case *types.VirtualLsiLogicController:
		return fmt.Sprintf("scsi%d", x.BusNumber), "lsilogic"
	case *types.VirtualLsiLogicSASController:
		return fmt.Sprintf("scsi%d", x.BusNumber), "lsisas1068"
	case *types.VirtualBusLogicController:
		return fmt.Sprintf("scsi%d", x.BusNumber), "buslogic"
	case *types.VirtualIDEController:
		return fmt.Sprintf("ide%d", x.BusNumber), ""
	case *types.VirtualAHCIController:
		return fmt.Sprintf("sata%d", x.BusNumber), "ahci"
	case *types.VirtualNVMEController:
		return fmt.Sprintf("nvme%d", x.BusNumber), ""
	}
	return "", ""
}

func nicVirtualDev(d types.BaseVirtualDevice) string {
	switch d.(type) {
	case *types.VirtualVmxnet3:
		return "vmxnet3"
	case *types.VirtualE1000e:
		return "e1000e"
	case *types.VirtualE1000:
		return "e1000"
	case *types.VirtualVmxnet2:
		return "vmxnet2"
	case *types.VirtualPCNet32:
		return "vlance"
	}
	return "e1000"
}

// vmxFileName is how a .vmx names a disk: relative to the VM's folder when it lives there,
// else /vmfs/volumes/<datastore>/<path>.
func vmxFileName(vmxPath, disk string) string {
	var v, d object.DatastorePath
	v.FromString(vmxPath)
	d.FromString(disk)
	if v.Datastore == d.Datastore && path.Dir(v.Path) == path.Dir(d.Path) {
		return path.Base(d.Path)
	}
	return "/vmfs/volumes/" + d.Datastore + "/" + d.Path
}

func tf(b bool) string {
	if b {
		return "TRUE"
	}
	return "FALSE"
}

// renderVMX writes the VM's configuration as ESXi would. Call with the VM locked.
func renderVMX(vm *simulator.VirtualMachine) string {
	c := vm.Config
	kv := [][2]string{
		{".encoding", "UTF-8"},
		{"config.version", "8"},
	}
	add := func(k, v string) { kv = append(kv, [2]string{k, v}) }
	hw := strings.TrimPrefix(c.Version, "vmx-")
	if hw == "" {
		hw = "13"
	}
	add("virtualHW.version", hw)
	add("displayName", c.Name)
	add("guestOS", guestIDToVMX(c.GuestId))
	firmware := c.Firmware
	if firmware == "" {
		firmware = "bios"
	}
	add("firmware", firmware)
	cpus := c.Hardware.NumCPU
	if cpus < 1 {
		cpus = 1
	}
	add("numvcpus", strconv.Itoa(int(cpus)))
	if c.Hardware.NumCoresPerSocket > 0 {
		add("cpuid.coresPerSocket", strconv.Itoa(int(c.Hardware.NumCoresPerSocket)))
	}
	mem := c.Hardware.MemoryMB
	if mem < 4 {
		mem = 4
	}
	add("memSize", strconv.Itoa(int(mem)))
	add("nvram", c.Name+".nvram")
	if s, ok := spacedFromCanonical(c.Uuid); ok {
		add("uuid.bios", s)
	}
	if s, ok := spacedFromCanonical(c.InstanceUuid); ok {
		add("vc.uuid", s)
	}
	if c.Annotation != "" {
		add("annotation", c.Annotation)
	}
	ctk := c.ChangeTrackingEnabled != nil && *c.ChangeTrackingEnabled
	add("ctkEnabled", tf(ctk))

	devices := object.VirtualDeviceList(c.Hardware.Device)
	for _, dev := range devices {
		prefix, virtualDev := controllerPrefix(dev)
		if prefix == "" || strings.HasPrefix(prefix, "ide") {
			continue
		}
		add(prefix+".present", "TRUE")
		if virtualDev != "" {
			add(prefix+".virtualDev", virtualDev)
		}
		if sc, ok := dev.(types.BaseVirtualSCSIController); ok {
			add(prefix+".sharedBus", sharedBusVMX(sc.GetVirtualSCSIController().SharedBus))
		}
	}
	for _, dev := range devices {
		d := dev.GetVirtualDevice()
		var kind string
		var fileName string
		switch x := dev.(type) {
		case *types.VirtualDisk:
			if b, ok := x.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
				fileName = vmxFileName(c.Files.VmPathName, b.GetVirtualDeviceFileBackingInfo().FileName)
				kind = "scsi-hardDisk"
			}
		case *types.VirtualCdrom:
			kind = "atapi-cdrom"
			if b, ok := x.Backing.(*types.VirtualCdromIsoBackingInfo); ok {
				kind = "cdrom-image"
				fileName = vmxFileName(c.Files.VmPathName, b.FileName)
			}
		default:
			continue
		}
		if d.UnitNumber == nil {
			continue
		}
		prefix, _ := controllerPrefix(devices.FindByKey(d.ControllerKey))
		if prefix == "" {
			continue
		}
		slot := fmt.Sprintf("%s:%d", prefix, *d.UnitNumber)
		add(slot+".present", "TRUE")
		if kind == "scsi-hardDisk" {
			if !strings.HasPrefix(prefix, "scsi") {
				kind = "disk"
			}
			add(slot+".fileName", fileName)
			add(slot+".deviceType", kind)
			if ctk {
				add(slot+".ctkEnabled", "TRUE")
			}
			if disk, ok := dev.(*types.VirtualDisk); ok {
				if b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok && b.DiskMode != "" && b.DiskMode != "persistent" {
					add(slot+".mode", strings.ReplaceAll(b.DiskMode, "_", "-"))
				}
			}
		} else {
			add(slot+".deviceType", kind)
			if fileName != "" {
				add(slot+".fileName", fileName)
			}
			add(slot+".startConnected", "FALSE")
		}
	}
	nic := 0
	for _, dev := range devices {
		eth, ok := dev.(types.BaseVirtualEthernetCard)
		if !ok {
			continue
		}
		card := eth.GetVirtualEthernetCard()
		p := fmt.Sprintf("ethernet%d", nic)
		nic++
		add(p+".present", "TRUE")
		add(p+".virtualDev", nicVirtualDev(dev))
		switch b := card.Backing.(type) {
		case *types.VirtualEthernetCardNetworkBackingInfo:
			add(p+".networkName", b.DeviceName)
		case *types.VirtualEthernetCardDistributedVirtualPortBackingInfo:
			add(p+".dvs.switchId", b.Port.SwitchUuid)
			add(p+".dvs.portgroupId", b.Port.PortgroupKey)
			if b.Port.PortKey != "" {
				add(p+".dvs.portId", b.Port.PortKey)
			}
			if pg := dvPortgroupName(b.Port.PortgroupKey); pg != "" {
				add(p+".networkName", pg)
			}
		case *types.VirtualEthernetCardOpaqueNetworkBackingInfo:
			add(p+".opaqueNetwork.id", b.OpaqueNetworkId)
			add(p+".opaqueNetwork.type", b.OpaqueNetworkType)
		}
		switch strings.ToLower(card.AddressType) {
		case "manual":
			add(p+".addressType", "static")
			add(p+".address", card.MacAddress)
		case "assigned":
			add(p+".addressType", "vpx")
			add(p+".generatedAddress", card.MacAddress)
		default:
			add(p+".addressType", "generated")
			add(p+".generatedAddress", card.MacAddress)
		}
		if card.Connectable != nil {
			add(p+".startConnected", tf(card.Connectable.StartConnected))
		}
	}
	var b strings.Builder
	for _, e := range kv {
		fmt.Fprintf(&b, "%s = \"%s\"\n", e[0], escapeVMX(e[1]))
	}
	return b.String()
}

func dvPortgroupName(key string) string {
	obj := simulator.Map.Get(types.ManagedObjectReference{Type: "DistributedVirtualPortgroup", Value: key})
	if pg, ok := obj.(*simulator.DistributedVirtualPortgroup); ok {
		return pg.Name
	}
	return ""
}

// escapeVMX uses the .vmx escapes: '|' followed by two hex digits.
func escapeVMX(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '"' || c == '|' || c < 0x20 || c == 0x7f {
			fmt.Fprintf(&b, "|%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func unescapeVMX(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '|' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// renderNVRAM makes an 8 KiB NVRAM image, deterministic per VM so that a restore can be
// compared byte for byte.
func renderNVRAM(seed string) []byte {
	out := make([]byte, 8192)
	copy(out, "NVRAM\x00\x00\x00safekeeping-lab")
	var ctr [8]byte
	for off := 64; off < len(out); off += 32 {
		binary.LittleEndian.PutUint64(ctr[:], uint64(off))
		h := sha256.Sum256(append([]byte(seed), ctr[:]...))
		copy(out[off:], h[:])
	}
	return out
}

// parseVMX reads key = "value" lines; keys are case-insensitive in ESXi, so they are
// lower-cased here.
func parseVMX(data []byte) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		i := strings.IndexByte(t, '=')
		if i < 0 {
			return nil, fmt.Errorf("line %d: expected key = \"value\"", line)
		}
		k := strings.ToLower(strings.TrimSpace(t[:i]))
		v := strings.TrimSpace(t[i+1:])
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		out[k] = unescapeVMX(v)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func readVMXFile(local string) (map[string]string, error) {
	data, err := os.ReadFile(local)
	if err != nil {
		return nil, err
	}
	return parseVMX(data)
}

// sortedKeys returns the map's keys with a prefix, sorted.
func sortedKeys(m map[string]string, prefix string) []string {
	var out []string
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func sharedBusVMX(s types.VirtualSCSISharing) string {
	switch s {
	case types.VirtualSCSISharingVirtualSharing:
		return "virtual"
	case types.VirtualSCSISharingPhysicalSharing:
		return "physical"
	}
	return "none"
}
