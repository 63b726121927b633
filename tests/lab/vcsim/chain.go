package main

// Delta disks as the lab stores them. CreateSnapshot does what ESXi does: each disk gets a
// child "<name>-00000N.vmdk" whose text descriptor says createType "vmfsSparse", names its
// parent in parentFileNameHint and has one VMFSSPARSE extent "<name>-00000N-delta.vmdk".
// ESXi's sparse extents are a binary grain-table format; the lab uses a simpler one that
// it and the fake VDDK (tests/fake-vddk/src/chain.rs) share:
//
//   - bytes [0, capacity) hold the disk's data at their own offsets, written only where the
//     guest wrote since the snapshot (the file is sparse: unwritten parts are holes);
//   - from deltaMapOffset(capacity) on, an allocation bitmap: one bit per 64 KiB grain,
//     least significant bit first in each byte. A set bit means the grain's whole content
//     lives in the delta; a clear bit means it is read from the parent.
//
// A new delta is therefore a truncate: creating a snapshot copies nothing, whatever the
// disk's size. A write that covers part of an unallocated grain first copies the rest of
// the grain from the parent chain (copy on write), so a set bit always means "complete".

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// grainSize is the delta's allocation unit: the lab's change tracking block, so a grain
// and a tracked block are the same thing.
const grainSize = blockSize

// maxChainDepth bounds a chain walk, so a descriptor naming itself as parent cannot loop.
const maxChainDepth = 255

// deltaMapOffset is where a delta extent's allocation bitmap starts: after the disk's
// data, rounded up to a grain.
func deltaMapOffset(capacity int64) int64 {
	return (capacity + grainSize - 1) / grainSize * grainSize
}

// deltaMapBytes is the size of a delta's allocation bitmap.
func deltaMapBytes(capacity int64) int64 {
	grains := (capacity + grainSize - 1) / grainSize
	return (grains + 7) / 8
}

// chainLayer is one disk file of a chain.
type chainLayer struct {
	desc   string // local descriptor path
	file   *os.File
	offset int64 // byte offset of the disk's data in file (flat extents may have one)
	delta  bool
	mapOff int64
}

// diskChain is a disk opened through its chain: layers[0] is the disk asked for, the last
// layer its flat base.
type diskChain struct {
	layers   []*chainLayer
	capacity int64
}

// isDeltaDescriptor tells whether the descriptor at a local path is a delta disk.
func isDeltaDescriptor(local string) bool {
	d, err := readDescriptorFile(local)
	return err == nil && d.ParentHint != ""
}

// parentPath resolves a delta's parentFileNameHint against its descriptor's folder.
func parentPath(descPath string, d *descriptor) string {
	if filepath.IsAbs(d.ParentHint) {
		return d.ParentHint
	}
	return filepath.Join(filepath.Dir(descPath), d.ParentHint)
}

// openChain opens the disk at a local descriptor path and every parent down to its flat
// base. Only the top layer is opened for writing, and only when writable is set.
func openChain(descPath string, writable bool) (*diskChain, error) {
	c := &diskChain{}
	cur := descPath
	for depth := 0; ; depth++ {
		if depth > maxChainDepth {
			c.Close()
			return nil, fmt.Errorf("%s: chain deeper than %d disks (a loop?)", descPath, maxChainDepth)
		}
		d, err := readDescriptorFile(cur)
		if err != nil {
			c.Close()
			return nil, err
		}
		if depth == 0 {
			c.capacity = d.Capacity()
		} else if d.Capacity() != c.capacity {
			c.Close()
			return nil, fmt.Errorf("%s: capacity %d differs from its child's %d", cur, d.Capacity(), c.capacity)
		}
		flag := os.O_RDONLY
		if writable && depth == 0 {
			flag = os.O_RDWR
		}
		if len(d.Extents) != 1 {
			c.Close()
			return nil, fmt.Errorf("%s: the lab handles single-extent disks only", cur)
		}
		ext := d.Extents[0].File
		if !filepath.IsAbs(ext) {
			ext = filepath.Join(filepath.Dir(cur), ext)
		}
		f, err := os.OpenFile(ext, flag, 0)
		if err != nil {
			c.Close()
			return nil, err
		}
		layer := &chainLayer{desc: cur, file: f, offset: d.Extents[0].Offset * 512}
		c.layers = append(c.layers, layer)
		if d.ParentHint == "" {
			return c, nil
		}
		layer.delta = true
		layer.offset = 0
		layer.mapOff = deltaMapOffset(c.capacity)
		cur = parentPath(cur, d)
	}
}

// Close closes every layer's file.
func (c *diskChain) Close() {
	for _, l := range c.layers {
		l.file.Close()
	}
}

// bits reads the allocation bits of grains [g0, g0+n) of a delta layer.
func (l *chainLayer) bits(g0, n int64) ([]bool, error) {
	out := make([]bool, n)
	if n == 0 {
		return out, nil
	}
	first, last := g0/8, (g0+n-1)/8
	buf := make([]byte, last-first+1)
	if _, err := l.file.ReadAt(buf, l.mapOff+first); err != nil && err != io.EOF {
		return nil, err
	}
	for i := int64(0); i < n; i++ {
		g := g0 + i
		out[i] = buf[g/8-first]&(1<<(uint(g)%8)) != 0
	}
	return out, nil
}

// setBits marks grains [g0, g0+n) of a delta layer allocated.
func (l *chainLayer) setBits(g0, n int64) error {
	if n == 0 {
		return nil
	}
	first, last := g0/8, (g0+n-1)/8
	buf := make([]byte, last-first+1)
	if _, err := l.file.ReadAt(buf, l.mapOff+first); err != nil && err != io.EOF {
		return err
	}
	for g := g0; g < g0+n; g++ {
		buf[g/8-first] |= 1 << (uint(g) % 8)
	}
	_, err := l.file.WriteAt(buf, l.mapOff+first)
	return err
}

// readRaw reads a layer's own bytes (no chain); past the file's end reads zeros.
func (l *chainLayer) readRaw(p []byte, off int64) error {
	n, err := l.file.ReadAt(p, l.offset+off)
	if err == io.EOF {
		for i := n; i < len(p); i++ {
			p[i] = 0
		}
		return nil
	}
	return err
}

// owners says, for each grain of [g0, g0+n), which layer holds it: the first delta with
// its bit set, else the base.
func (c *diskChain) owners(g0, n int64, from int) ([]int, error) {
	out := make([]int, n)
	for i := range out {
		out[i] = -1
	}
	for li := from; li < len(c.layers); li++ {
		l := c.layers[li]
		if !l.delta {
			for i := range out {
				if out[i] < 0 {
					out[i] = li
				}
			}
			break
		}
		bits, err := l.bits(g0, n)
		if err != nil {
			return nil, err
		}
		for i, b := range bits {
			if b && out[i] < 0 {
				out[i] = li
			}
		}
	}
	return out, nil
}

// ReadAt reads the disk's content at off through the chain.
func (c *diskChain) ReadAt(p []byte, off int64) error {
	return c.readFrom(p, off, 0)
}

// readFrom reads through the chain starting at layer from (from > 0 reads what the layer
// below sees: copy on write and merges use it).
func (c *diskChain) readFrom(p []byte, off int64, from int) error {
	if off < 0 || off+int64(len(p)) > c.capacity {
		return fmt.Errorf("read of %d bytes at %d is outside the disk (capacity %d)", len(p), off, c.capacity)
	}
	if len(p) == 0 {
		return nil
	}
	end := off + int64(len(p))
	g0 := off / grainSize
	n := (end-1)/grainSize - g0 + 1
	own, err := c.owners(g0, n, from)
	if err != nil {
		return err
	}
	for i := int64(0); i < n; {
		j := i
		for j+1 < n && own[j+1] == own[i] {
			j++
		}
		s := (g0 + i) * grainSize
		if s < off {
			s = off
		}
		e := (g0 + j + 1) * grainSize
		if e > end {
			e = end
		}
		if err := c.layers[own[i]].readRaw(p[s-off:e-off], s); err != nil {
			return err
		}
		i = j + 1
	}
	return nil
}

// WriteAt writes to the top layer; on a delta, partially written grains are completed from
// the parent chain first and written grains are marked allocated after their data.
func (c *diskChain) WriteAt(p []byte, off int64) error {
	if off < 0 || off+int64(len(p)) > c.capacity {
		return fmt.Errorf("write of %d bytes at %d is outside the disk (capacity %d)", len(p), off, c.capacity)
	}
	top := c.layers[0]
	if !top.delta {
		_, err := top.file.WriteAt(p, top.offset+off)
		return err
	}
	if len(p) == 0 {
		return nil
	}
	end := off + int64(len(p))
	g0 := off / grainSize
	n := (end-1)/grainSize - g0 + 1
	have, err := top.bits(g0, n)
	if err != nil {
		return err
	}
	for i := int64(0); i < n; i++ {
		gs := (g0 + i) * grainSize
		ge := gs + grainSize
		if ge > c.capacity {
			ge = c.capacity
		}
		if have[i] || (off <= gs && end >= ge) {
			continue
		}
		// Copy on write: the grain's old content from below, then the new bytes over it.
		grain := make([]byte, ge-gs)
		if err := c.readFrom(grain, gs, 1); err != nil {
			return err
		}
		s, e := maxInt64(off, gs), minInt64(end, ge)
		copy(grain[s-gs:e-gs], p[s-off:e-off])
		if _, err := top.file.WriteAt(grain, gs); err != nil {
			return err
		}
	}
	// The covered middle (and grains already allocated) in one write: rewriting bytes the
	// copy on write just wrote is harmless.
	if _, err := top.file.WriteAt(p, off); err != nil {
		return err
	}
	return top.setBits(g0, n)
}

// Sync makes the top layer durable.
func (c *diskChain) Sync() error { return c.layers[0].file.Sync() }

// allocatedRuns lists the runs of grains [first, end) any layer may hold data in (the
// base's allocated ranges and every delta's set bits), sorted and merged. Runs, not a
// per-grain table, so a 16 TiB disk with little written costs little memory.
func (c *diskChain) allocatedRuns() ([][2]int64, error) {
	grains := (c.capacity + grainSize - 1) / grainSize
	var runs [][2]int64
	for _, l := range c.layers {
		if l.delta {
			buf := make([]byte, 1<<20)
			for b0 := int64(0); b0 < deltaMapBytes(c.capacity); b0 += int64(len(buf)) {
				n := minInt64(int64(len(buf)), deltaMapBytes(c.capacity)-b0)
				if _, err := l.file.ReadAt(buf[:n], l.mapOff+b0); err != nil && err != io.EOF {
					return nil, err
				}
				for i := int64(0); i < n; i++ {
					if buf[i] == 0 {
						continue
					}
					for bit := int64(0); bit < 8; bit++ {
						g := (b0+i)*8 + bit
						if buf[i]&(1<<uint(bit)) == 0 || g >= grains {
							continue
						}
						if k := len(runs); k > 0 && runs[k-1][1] == g {
							runs[k-1][1]++
						} else {
							runs = append(runs, [2]int64{g, g + 1})
						}
					}
				}
			}
			continue
		}
		st, err := l.file.Stat()
		if err != nil {
			return nil, err
		}
		size := minInt64(st.Size()-l.offset, c.capacity)
		var ranges [][2]int64
		if l.offset == 0 {
			if ranges, err = dataRanges(l.file, size); err != nil {
				return nil, err
			}
		} else if size > 0 {
			ranges = [][2]int64{{0, size}}
		}
		for _, r := range ranges {
			runs = append(runs, [2]int64{r[0] / grainSize, (r[1] + grainSize - 1) / grainSize})
		}
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i][0] < runs[j][0] })
	var out [][2]int64
	for _, r := range runs {
		if k := len(out); k > 0 && r[0] <= out[k-1][1] {
			out[k-1][1] = maxInt64(out[k-1][1], r[1])
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// nonZeroGrains lists the 64 KiB blocks of the chain's content that are not all zero.
//
// vCenter answers a "*" query from the disk's allocation metadata without reading data; the
// lab keeps its stricter answer (allocated and not all zero) but reads only what it takes to
// know: the owners of a run's grains are looked up once per batch (not once per grain), then
// each grain's first file system block is read from its owner, and the rest of the grain only
// when that block is zero. A guest's data grain almost always shows data in its first block,
// so a 1.3 GB disk costs a few MB of reads instead of all of them (which took 1-4 s of every
// full backup's wall time in the benchmark).
func (c *diskChain) nonZeroGrains() ([]int64, error) {
	runs, err := c.allocatedRuns()
	if err != nil {
		return nil, err
	}
	const batch = 4096
	var out []int64
	buf := make([]byte, grainSize)
	for _, r := range runs {
		for g0 := r[0]; g0 < r[1]; g0 += batch {
			n := minInt64(batch, r[1]-g0)
			own, err := c.owners(g0, n, 0)
			if err != nil {
				return nil, err
			}
			for i := int64(0); i < n; i++ {
				g := g0 + i
				size := minInt64(grainSize, c.capacity-g*grainSize)
				layer := c.layers[own[i]]
				nonZero, err := grainHasData(buf[:size], func(p []byte, off int64) error {
					return layer.readRaw(p, g*grainSize+off)
				})
				if err != nil {
					return nil, err
				}
				if nonZero {
					out = append(out, g)
				}
			}
		}
	}
	return out, nil
}

// probeSize is the part of a grain read first by grainHasData: one file system block.
const probeSize = 4096

// grainHasData tells whether a grain of len(buf) bytes holds a non-zero byte, reading its
// first probeSize bytes first and the rest only when those are all zero (read(p, off) fills
// p with the grain's bytes from off).
func grainHasData(buf []byte, read func(p []byte, off int64) error) (bool, error) {
	k := minInt64(probeSize, int64(len(buf)))
	if err := read(buf[:k], 0); err != nil {
		return false, err
	}
	if !allZero(buf[:k]) {
		return true, nil
	}
	if int64(len(buf)) == k {
		return false, nil
	}
	if err := read(buf[k:], k); err != nil {
		return false, err
	}
	return !allZero(buf[k:]), nil
}

// hashTo feeds the chain's whole content to w; grains no layer holds are zeros, not read.
func (c *diskChain) hashTo(w io.Writer) error {
	runs, err := c.allocatedRuns()
	if err != nil {
		return err
	}
	buf := make([]byte, 4<<20)
	var pos int64
	for _, r := range runs {
		s, e := r[0]*grainSize, minInt64(r[1]*grainSize, c.capacity)
		hashZeros(w, s-pos)
		for p := s; p < e; {
			n := minInt64(int64(len(buf)), e-p)
			if err := c.ReadAt(buf[:n], p); err != nil {
				return err
			}
			_, _ = w.Write(buf[:n])
			p += n
		}
		pos = e
	}
	hashZeros(w, c.capacity-pos)
	return nil
}

// createDelta makes a new, empty delta child of the disk at parentLocal: "<stem>-00000N.vmdk"
// in the parent's folder, N the first free number. It returns the child's descriptor file
// name. Nothing is copied: the extent is a truncate to its full (sparse) size.
func createDelta(parentLocal string) (string, error) {
	parent, err := readDescriptorFile(parentLocal)
	if err != nil {
		return "", err
	}
	dir := filepath.Dir(parentLocal)
	stem := baseDiskStem(strings.TrimSuffix(filepath.Base(parentLocal), ".vmdk"))
	var name string
	for n := 1; ; n++ {
		if n > 999999 {
			return "", fmt.Errorf("%s: no free delta disk name", parentLocal)
		}
		name = fmt.Sprintf("%s-%06d", stem, n)
		if _, err := os.Lstat(filepath.Join(dir, name+".vmdk")); os.IsNotExist(err) {
			break
		}
	}
	capacity := parent.Capacity()
	extent := name + "-delta.vmdk"
	extentPath := filepath.Join(dir, extent)
	_ = removeIfExists(extentPath)
	f, err := os.OpenFile(extentPath, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	err = f.Truncate(deltaMapOffset(capacity) + deltaMapBytes(capacity))
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	if err != nil {
		os.Remove(extentPath)
		return "", err
	}
	adapter := parent.AdapterType
	if adapter == "" {
		adapter = "lsilogic"
	}
	text := renderDeltaDescriptor(capacity, extent, filepath.Base(parentLocal), parent.CID, parent.UUID, adapter)
	if err := writeFileAtomic(filepath.Join(dir, name+".vmdk"), text, 0o600); err != nil {
		os.Remove(extentPath)
		return "", err
	}
	return name + ".vmdk", nil
}

// baseDiskStem strips a delta's "-00000N" from a disk name, so the children of
// "web01-000001" are numbered "web01-00000N" as ESXi numbers them.
func baseDiskStem(stem string) string {
	i := strings.LastIndexByte(stem, '-')
	if i < 0 || len(stem)-i-1 != 6 {
		return stem
	}
	for _, r := range stem[i+1:] {
		if r < '0' || r > '9' {
			return stem
		}
	}
	return stem[:i]
}

// mergeDelta writes every allocated grain of the delta at childLocal into its parent (a
// flat base, or a delta whose bits it sets), syncs the parent and returns the parent's
// local descriptor path. The child's files are left for the caller to remove once nothing
// refers to them.
func mergeDelta(childLocal string) (string, error) {
	d, err := readDescriptorFile(childLocal)
	if err != nil {
		return "", err
	}
	if d.ParentHint == "" {
		return "", fmt.Errorf("%s is not a delta disk", childLocal)
	}
	parentLocal := parentPath(childLocal, d)
	child, err := openChain(childLocal, false)
	if err != nil {
		return "", err
	}
	defer child.Close()
	parent, err := openChain(parentLocal, true)
	if err != nil {
		return "", err
	}
	defer parent.Close()
	own := child.layers[0]
	mapBuf := make([]byte, deltaMapBytes(child.capacity))
	if _, err := own.file.ReadAt(mapBuf, own.mapOff); err != nil && err != io.EOF {
		return "", err
	}
	grains := (child.capacity + grainSize - 1) / grainSize
	buf := make([]byte, 4<<20)
	for g := int64(0); g < grains; {
		// A clear bitmap byte is 8 grains with nothing to merge: skipped whole, so the walk
		// costs the bitmap's bytes, not the disk's grains (268 M of them for 16 TiB, which
		// one by one made every RemoveSnapshot of a 16 TiB disk take about 0.4 s).
		if g%8 == 0 && mapBuf[g/8] == 0 {
			g += 8
			continue
		}
		if mapBuf[g/8]&(1<<(uint(g)%8)) == 0 {
			g++
			continue
		}
		h := g
		for h+1 < grains && mapBuf[(h+1)/8]&(1<<(uint(h+1)%8)) != 0 && (h+2-g)*grainSize <= int64(len(buf)) {
			h++
		}
		s, e := g*grainSize, minInt64((h+1)*grainSize, child.capacity)
		if err := own.readRaw(buf[:e-s], s); err != nil {
			return "", err
		}
		// Whole grains: the parent, if a delta, takes them without copy on write.
		if err := parent.WriteAt(buf[:e-s], s); err != nil {
			return "", err
		}
		g = h + 1
	}
	if err := parent.Sync(); err != nil {
		return "", err
	}
	return parentLocal, nil
}

func minInt64(a, b int64) int64 {
	if a < b {
		return a
	}
	return b
}

func maxInt64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}
