package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/vmware/govmomi/simulator"
)

// diskDigest is the SHA-256 of a disk's whole logical content: its descriptor's flat
// extents in order, holes and missing tails read as zeros (a delta disk's content through
// its chain). Go's SHA-256 uses the CPU's
// SHA instructions, which makes this the fast way to digest big disks; safekeeping-lab
// has its own implementation as a fallback.
func diskDigest(descPath string) (string, int64, error) {
	desc, err := readDescriptorFile(descPath)
	if err != nil {
		return "", 0, err
	}
	h := sha256.New()
	if desc.ParentHint != "" {
		// A delta disk: its content is the chain's.
		c, err := openChain(descPath, false)
		if err != nil {
			return "", 0, err
		}
		defer c.Close()
		if err := c.hashTo(h); err != nil {
			return "", 0, err
		}
		return hex.EncodeToString(h.Sum(nil)), c.capacity, nil
	}
	buf := make([]byte, 4<<20)
	var total int64
	for _, e := range desc.Extents {
		p := e.File
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(descPath), p)
		}
		f, err := os.Open(p)
		if err != nil {
			return "", 0, err
		}
		length := e.Sectors * 512
		err = hashExtent(h, f, e.Offset*512, length, buf)
		f.Close()
		if err != nil {
			return "", 0, fmt.Errorf("reading %s: %w", p, err)
		}
		total += length
	}
	return hex.EncodeToString(h.Sum(nil)), total, nil
}

// digestTarget resolves a disk-digest request to a descriptor's local path: a datastore
// path, or a VM (by name or moref, restored ones included) and disk index.
func (l *lab) digestTarget(path, vmName, disk string) (string, error) {
	if path != "" {
		if f, msg := checkDatastorePath(path); f != nil {
			return "", fmt.Errorf("%s", msg)
		}
		return l.localPath(path)
	}
	vm, err := findVM(vmName)
	if err != nil {
		return "", err
	}
	var n int
	if _, err := fmt.Sscanf(disk, "%d", &n); err != nil {
		return "", fmt.Errorf("disk index %q is not a number", disk)
	}
	var disks []diskView
	simulator.Map.WithLock(vm, func() { disks = vmDisks(vm) })
	if n < 0 || n >= len(disks) {
		return "", fmt.Errorf("VM %s has %d disks; disk %d does not exist", vm.Name, len(disks), n)
	}
	return l.localPath(disks[n].fileName)
}

var zeros = make([]byte, 4<<20)

// hashZeros feeds n zero bytes to w without reading anything.
func hashZeros(w io.Writer, n int64) {
	for n > 0 {
		k := int64(len(zeros))
		if n < k {
			k = n
		}
		_, _ = w.Write(zeros[:k])
		n -= k
	}
}

// hashExtent feeds length bytes of f from off to w: holes (SEEK_HOLE) and the part past
// the end of the file as zeros without reading them, data as read.
func hashExtent(w io.Writer, f *os.File, off, length int64, buf []byte) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	end := off + length
	fileEnd := st.Size()
	if fileEnd > end {
		fileEnd = end
	}
	ranges := [][2]int64{{off, fileEnd}}
	if off == 0 && fileEnd > 0 {
		if r, err := dataRanges(f, fileEnd); err == nil {
			ranges = r
		}
	}
	pos := off
	for _, rg := range ranges {
		if rg[1] <= pos {
			continue
		}
		if rg[0] > pos {
			hashZeros(w, rg[0]-pos)
			pos = rg[0]
		}
		n, err := io.CopyBuffer(w, io.NewSectionReader(f, pos, rg[1]-pos), buf)
		if err != nil {
			return err
		}
		if n != rg[1]-pos {
			return fmt.Errorf("short read at %d", pos+n)
		}
		pos = rg[1]
	}
	if pos < end {
		hashZeros(w, end-pos)
	}
	return nil
}
