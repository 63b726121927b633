package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// 64 KiB: the lab's change tracking granularity.
const blockSize = 64 * 1024

// descriptor is the part of a VMware text disk descriptor the lab reads and writes.
type descriptor struct {
	// Extents are the flat extent files, relative to the descriptor's folder.
	Extents []extent
	// UUID is ddb.uuid in descriptor form ("60 00 C2 9a ...").
	UUID string
	// AdapterType is ddb.adapterType.
	AdapterType string
	// CID is the content id (a delta records its parent's as parentCID).
	CID string
	// ParentHint is parentFileNameHint: set on delta disks only (see chain.go).
	ParentHint string
}

type extent struct {
	Sectors int64
	File    string
	Offset  int64
}

// Capacity is the disk's logical size in bytes.
func (d *descriptor) Capacity() int64 {
	var n int64
	for _, e := range d.Extents {
		n += e.Sectors * 512
	}
	return n
}

var extentLine = regexp.MustCompile(`^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(FLAT|VMFS|VMFSSPARSE)\s+"([^"]+)"(?:\s+(\d+))?\s*$`)

// parseDescriptor reads a text descriptor: flat disks, and the lab's delta disks
// (VMFSSPARSE extents in the format chain.go describes, with a parentFileNameHint).
func parseDescriptor(data []byte) (*descriptor, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("empty descriptor")
	}
	if bytes.IndexByte(data, 0) >= 0 {
		return nil, fmt.Errorf("not a text descriptor (binary data)")
	}
	d := &descriptor{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := extentLine.FindStringSubmatch(line); m != nil {
			sectors, _ := strconv.ParseInt(m[2], 10, 64)
			var off int64
			if m[5] != "" {
				off, _ = strconv.ParseInt(m[5], 10, 64)
			}
			d.Extents = append(d.Extents, extent{Sectors: sectors, File: m[4], Offset: off})
			continue
		}
		if k, v, ok := ddbLine(line); ok {
			switch k {
			case "CID":
				d.CID = v
			case "parentFileNameHint":
				d.ParentHint = v
			case "ddb.uuid":
				d.UUID = v
			case "ddb.adapterType":
				d.AdapterType = v
			}
		}
	}
	if len(d.Extents) == 0 {
		return nil, fmt.Errorf("descriptor has no flat extent")
	}
	if sparse := deltaExtents(data); sparse != (d.ParentHint != "") || (sparse && len(d.Extents) != 1) {
		return nil, fmt.Errorf("a sparse extent needs a parentFileNameHint and is the only extent (the lab's delta disks)")
	}
	return d, nil
}

// deltaExtents tells whether a descriptor's extents are VMFSSPARSE ones.
func deltaExtents(data []byte) bool {
	return bytes.Contains(data, []byte(" VMFSSPARSE \""))
}

func ddbLine(line string) (string, string, bool) {
	i := strings.IndexByte(line, '=')
	if i < 0 || strings.HasPrefix(line, "#") {
		return "", "", false
	}
	k := strings.TrimSpace(line[:i])
	v := strings.Trim(strings.TrimSpace(line[i+1:]), `"`)
	return k, v, true
}

// renderDescriptor writes a monolithic-flat ("vmfs") descriptor for one extent.
func renderDescriptor(capacity int64, flatName, uuid, adapter string) []byte {
	sectors := (capacity + 511) / 512
	cyl := sectors / (255 * 63)
	if cyl > 65535 {
		cyl = 65535
	}
	cid := randomHex(4)
	var b strings.Builder
	b.WriteString("# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\n")
	fmt.Fprintf(&b, "CID=%s\nparentCID=ffffffff\ncreateType=\"vmfs\"\n\n", cid)
	fmt.Fprintf(&b, "# Extent description\nRW %d VMFS \"%s\"\n\n", sectors, flatName)
	b.WriteString("# The Disk Data Base\n#DDB\n\n")
	fmt.Fprintf(&b, "ddb.adapterType = \"%s\"\n", adapter)
	fmt.Fprintf(&b, "ddb.geometry.cylinders = \"%d\"\nddb.geometry.heads = \"255\"\nddb.geometry.sectors = \"63\"\n", cyl)
	fmt.Fprintf(&b, "ddb.longContentID = \"%s\"\n", randomHex(16))
	b.WriteString("ddb.thinProvisioned = \"1\"\n")
	fmt.Fprintf(&b, "ddb.uuid = \"%s\"\n", uuid)
	b.WriteString("ddb.virtualHWVersion = \"13\"\n")
	return []byte(b.String())
}

// renderDeltaDescriptor writes a delta disk's descriptor as ESXi does for a snapshot's
// child disk: createType vmfsSparse, the parent's CID and file name, one sparse extent.
func renderDeltaDescriptor(capacity int64, extentName, parentName, parentCID, uuid, adapter string) []byte {
	sectors := (capacity + 511) / 512
	if parentCID == "" {
		parentCID = "ffffffff"
	}
	var b strings.Builder
	b.WriteString("# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\n")
	fmt.Fprintf(&b, "CID=%s\nparentCID=%s\ncreateType=\"vmfsSparse\"\nparentFileNameHint=\"%s\"\n\n", randomHex(4), parentCID, parentName)
	fmt.Fprintf(&b, "# Extent description\nRW %d VMFSSPARSE \"%s\"\n\n", sectors, extentName)
	b.WriteString("# The Disk Data Base\n#DDB\n\n")
	fmt.Fprintf(&b, "ddb.adapterType = \"%s\"\n", adapter)
	fmt.Fprintf(&b, "ddb.longContentID = \"%s\"\n", randomHex(16))
	fmt.Fprintf(&b, "ddb.uuid = \"%s\"\n", uuid)
	b.WriteString("ddb.virtualHWVersion = \"13\"\n")
	return []byte(b.String())
}

// rewriteParentHint points a delta's descriptor at another parent file (after its old
// parent was merged away).
func rewriteParentHint(local, parentName string) error {
	data, err := os.ReadFile(local)
	if err != nil {
		return err
	}
	lines := strings.Split(string(data), "\n")
	found := false
	for i, line := range lines {
		if strings.HasPrefix(strings.TrimSpace(line), "parentFileNameHint") {
			lines[i] = fmt.Sprintf("parentFileNameHint=\"%s\"", parentName)
			found = true
		}
	}
	if !found {
		return fmt.Errorf("%s has no parentFileNameHint", local)
	}
	return writeFileAtomic(local, []byte(strings.Join(lines, "\n")), 0o600)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // the kernel's random source failing is not recoverable
	}
	return b
}

func randomHex(n int) string { return fmt.Sprintf("%x", randomBytes(n)) }

// newDiskUUID returns a disk uuid the way ESXi makes them (6000C29...), in descriptor form
// ("60 00 C2 9a ...") and in the API's canonical form.
func newDiskUUID() (ddb string, canonical string) {
	b := randomBytes(16)
	b[0], b[1], b[2] = 0x60, 0x00, 0xC2
	b[3] = 0x90 | (b[3] & 0x0f)
	return spacedHex(b), fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// spacedHex is the vSphere "xx xx xx xx xx xx xx xx-xx xx ..." form used by ddb.uuid,
// uuid.bios and change ids.
func spacedHex(b []byte) string {
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02x", x)
	}
	return strings.Join(parts[:8], " ") + "-" + strings.Join(parts[8:], " ")
}

// canonicalFromSpaced turns "xx xx .. xx-xx .. xx" into a canonical uuid.
func canonicalFromSpaced(s string) (string, bool) {
	h := strings.NewReplacer(" ", "", "-", "").Replace(s)
	if len(h) != 32 {
		return "", false
	}
	return fmt.Sprintf("%s-%s-%s-%s-%s", h[0:8], h[8:12], h[12:16], h[16:20], h[20:32]), true
}

// spacedFromCanonical is the inverse of canonicalFromSpaced.
func spacedFromCanonical(s string) (string, bool) {
	h := strings.ReplaceAll(s, "-", "")
	if len(h) != 32 {
		return "", false
	}
	var b [16]byte
	for i := 0; i < 16; i++ {
		v, err := strconv.ParseUint(h[2*i:2*i+2], 16, 8)
		if err != nil {
			return "", false
		}
		b[i] = byte(v)
	}
	return spacedHex(b[:]), true
}

// flatNameFor is the flat extent name ESXi uses for a descriptor name.
func flatNameFor(descriptorName string) string {
	return strings.TrimSuffix(descriptorName, ".vmdk") + "-flat.vmdk"
}

// readDescriptorFile parses the descriptor at a local path.
func readDescriptorFile(path string) (*descriptor, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	d, err := parseDescriptor(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// flatPath is the local path of a single-extent descriptor's flat file.
func flatPath(descPath string, d *descriptor) (string, error) {
	if len(d.Extents) != 1 || d.Extents[0].Offset != 0 {
		return "", fmt.Errorf("%s: the lab handles single flat extents only", descPath)
	}
	f := d.Extents[0].File
	if filepath.IsAbs(f) {
		return f, nil
	}
	return filepath.Join(filepath.Dir(descPath), f), nil
}

// SEEK_DATA and SEEK_HOLE (Linux).
const (
	seekData = 3
	seekHole = 4
)

// dataRanges lists the allocated ranges of a file (SEEK_DATA/SEEK_HOLE); on file systems
// without support the whole file is one range.
func dataRanges(f *os.File, size int64) ([][2]int64, error) {
	var out [][2]int64
	var off int64
	for off < size {
		start, err := f.Seek(off, seekData)
		if err != nil {
			if err == syscall.ENXIO || isErrno(err, syscall.ENXIO) {
				break
			}
			if isErrno(err, syscall.EINVAL) {
				return [][2]int64{{0, size}}, nil
			}
			return nil, err
		}
		end, err := f.Seek(start, seekHole)
		if err != nil {
			return nil, err
		}
		if end > size {
			end = size
		}
		if start >= end {
			break
		}
		out = append(out, [2]int64{start, end})
		off = end
	}
	return out, nil
}

func isErrno(err error, errno syscall.Errno) bool {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err == errno
	}
	return err == errno
}

// FICLONE ioctl number (Linux).
const ficlone = 0x40049409

// copySparse copies src to a new file dst (which must not exist), keeping holes: a reflink
// where the file system offers it, else SEEK_DATA/SEEK_HOLE. dst is synced.
func copySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		out.Close()
		if !ok {
			os.Remove(tmp)
		}
	}()
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, out.Fd(), ficlone, in.Fd()); errno != 0 {
		if err := out.Truncate(st.Size()); err != nil {
			return err
		}
		ranges, err := dataRanges(in, st.Size())
		if err != nil {
			return err
		}
		buf := make([]byte, 1<<20)
		for _, r := range ranges {
			if _, err := in.Seek(r[0], io.SeekStart); err != nil {
				return err
			}
			if _, err := out.Seek(r[0], io.SeekStart); err != nil {
				return err
			}
			if _, err := io.CopyBuffer(out, io.LimitReader(in, r[1]-r[0]), buf); err != nil {
				return err
			}
		}
	}
	if err := out.Sync(); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	ok = true
	return syncDir(filepath.Dir(dst))
}

// nonZeroBlocks lists the 64 KiB blocks of a flat file that are allocated and not all zero.
func nonZeroBlocks(path string, capacity int64) ([]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if size > capacity {
		size = capacity
	}
	ranges, err := dataRanges(f, size)
	if err != nil {
		return nil, err
	}
	var out []int64
	buf := make([]byte, blockSize)
	last := int64(-1)
	for _, r := range ranges {
		for b := r[0] / blockSize; b*blockSize < r[1]; b++ {
			if b <= last {
				continue
			}
			last = b
			// The file may end inside the block: only its bytes are looked at.
			n := minInt64(blockSize, size-b*blockSize)
			nonZero, err := grainHasData(buf[:n], func(p []byte, off int64) error {
				got, err := f.ReadAt(p, b*blockSize+off)
				if err == io.EOF {
					// Shrunk since the stat: what is gone reads as zeros.
					for i := got; i < len(p); i++ {
						p[i] = 0
					}
					err = nil
				}
				return err
			})
			if err != nil {
				return nil, err
			}
			if nonZero {
				out = append(out, b)
			}
		}
	}
	return out, nil
}

// zeroGrain is compared against by allZero (bytes.Equal is the runtime's vectorised compare).
var zeroGrain = make([]byte, blockSize)

func allZero(b []byte) bool {
	for len(b) > 0 {
		n := len(b)
		if n > len(zeroGrain) {
			n = len(zeroGrain)
		}
		if !bytes.Equal(b[:n], zeroGrain[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
