package main

import (
	"fmt"
	"io/ioutil"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// The fake VDDK cannot see the simulator's state, so the lab tells it where first class
// disks and their snapshots' frozen copies are: `fake.fcd.<id>` and
// `fake.fcd_snapshot.<id>.<snapshot id>` keys in DIR/vddk/vddk.conf. The file is rewritten
// atomically (temp file, fsync, rename) under the lab lock; every other line (the settings
// `up` wrote, fault-injection keys tests appended) is kept as it is.

const (
	fcdKeyPrefix     = "fake.fcd."
	fcdSnapKeyPrefix = "fake.fcd_snapshot."
)

// vddkConfPath is the fake VDDK's configuration file.
func (l *lab) vddkConfPath() string { return filepath.Join(l.dir, "vddk", "vddk.conf") }

// fcdConfLines are the keys describing the current first class disks and snapshots.
func (l *lab) fcdConfLines() []string {
	var lines []string
	for id, path := range l.fcds {
		lines = append(lines, fmt.Sprintf("%s%s = %s", fcdKeyPrefix, id, path))
	}
	for key, s := range l.snaps {
		if s.fcdID == "" {
			continue
		}
		fd := s.disks[0]
		if fd == nil {
			continue
		}
		snapID := strings.TrimPrefix(key, "fcd:")
		lines = append(lines, fmt.Sprintf("%s%s.%s = %s", fcdSnapKeyPrefix, s.fcdID, snapID, fd.path))
	}
	sort.Strings(lines)
	return lines
}

// syncVDDKConf rewrites the first class disk keys of DIR/vddk/vddk.conf when they differ
// from the lab's records. Call with l.mu held.
func (l *lab) syncVDDKConf() {
	path := l.vddkConfPath()
	raw, err := ioutil.ReadFile(path)
	if os.IsNotExist(err) {
		return // `up` has not written it yet, or `down` removed it
	}
	if err != nil {
		log.Printf("lab: reading %s: %v", path, err)
		return
	}
	var kept, current []string
	for _, line := range strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, fcdKeyPrefix) || strings.HasPrefix(t, fcdSnapKeyPrefix) {
			current = append(current, t)
			continue
		}
		kept = append(kept, line)
	}
	want := l.fcdConfLines()
	sort.Strings(current)
	if strings.Join(current, "\n") == strings.Join(want, "\n") {
		return
	}
	text := strings.Join(append(kept, want...), "\n") + "\n"
	mode := os.FileMode(0o600)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	if err := writeFileAtomic(path, []byte(text), mode); err != nil {
		log.Printf("lab: writing %s: %v", path, err)
	}
}

// forgetGoneFCDs drops first class disks whose descriptor no longer exists.
func (l *lab) forgetGoneFCDs() {
	for id, p := range l.fcds {
		local, err := l.localPath(p)
		if err != nil {
			delete(l.fcds, id)
			continue
		}
		if _, err := os.Stat(local); os.IsNotExist(err) {
			delete(l.fcds, id)
		}
	}
}
