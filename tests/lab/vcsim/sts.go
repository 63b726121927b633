package main

// vCenter single sign-on in the lab: the Security Token Service at /sts/STSService and a
// vCenter instance uuid of the lab's own.
//
// govmomi's STS simulator issues a token to anyone; the lab checks the WS-Security
// UsernameToken against its one user and password first, and answers a wrong one with the
// fault a real STS sends (wst:FailedAuthentication), so a refused SSO login can be tested.
// vcsim's LoginByToken then accepts the token it issued (it reads Assertion/Subject/NameID).

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io/ioutil"
	"log"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/uuid"
	"github.com/vmware/govmomi/simulator"
	stssim "github.com/vmware/govmomi/sts/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

// stsPath is where vCenter serves its STS (and govmomi's sts client looks for it).
const stsPath = "/sts/"

// usernameToken is the part of a WS-Trust Issue request the lab checks.
type usernameToken struct {
	Username string `xml:"Header>Security>UsernameToken>Username"`
	Password string `xml:"Header>Security>UsernameToken>Password"`
}

// serveSTS checks the UsernameToken of an Issue request and passes accepted requests to
// govmomi's STS simulator.
func (l *lab) serveSTS(settings []types.BaseOptionValue) http.HandlerFunc {
	_, sim := stssim.New(&url.URL{}, settings)
	return func(w http.ResponseWriter, r *http.Request) {
		if sim == nil {
			http.Error(w, "the lab has no STS simulator (config.vpxd.sso.sts.uri is not set)", http.StatusNotFound)
			return
		}
		body, err := ioutil.ReadAll(r.Body)
		_ = r.Body.Close()
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if strings.HasSuffix(r.Header.Get("SOAPAction"), "/Issue") {
			var tok usernameToken
			_ = xml.Unmarshal(body, &tok)
			if !strings.EqualFold(tok.Username, l.user) || tok.Password != l.password {
				// The user is logged, the password never is.
				log.Printf("lab: STS refused user %q", tok.Username)
				writeSTSFault(w)
				return
			}
		}
		r.Body = ioutil.NopCloser(bytes.NewReader(body))
		sim.ServeHTTP(w, r)
	}
}

// writeSTSFault answers as vCenter's STS does for a wrong user or password.
func writeSTSFault(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?>`+
		`<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body><S:Fault>`+
		`<faultcode xmlns:ns0="http://docs.oasis-open.org/ws-sx/ws-trust/200512">ns0:FailedAuthentication</faultcode>`+
		`<faultstring>Invalid credentials</faultstring></S:Fault></S:Body></S:Envelope>`)
}

// setInstanceUUID gives the lab's vCenter an instance uuid of its own, derived from the lab
// directory: two labs are two vCenters (vcsim's is the same everywhere), and a lab restarted
// in the same directory stays the same vCenter.
func setInstanceUUID(dir string) string {
	id := uuid.NewSHA1(uuid.NameSpaceURL, []byte("safekeeping-lab:"+dir)).String()
	if si, ok := simulator.Map.Get(vim25.ServiceInstance).(*simulator.ServiceInstance); ok {
		si.Content.About.InstanceUuid = id
	}
	return id
}

// optionSettings are the vCenter settings the STS simulator reads its path from.
func optionSettings() []types.BaseOptionValue {
	return simulator.Map.OptionManager().Setting
}

// sessionsMu serialises appends to DIR/lab-state/sessions.
var sessionsMu sync.Mutex

// serveLogin passes Login and LoginByToken to vcsim and appends the session key it set as
// the vmware_soap_session cookie to DIR/lab-state/sessions, which the fake VDDK reads
// (fake.sessions_file) to accept only sessions this vCenter issued.
func (l *lab) serveLogin(w http.ResponseWriter, r *http.Request, body []byte) {
	rec := l.passRecorded(r, body)
	resp := http.Response{Header: rec.Header()}
	for _, c := range resp.Cookies() {
		if c.Name != "vmware_soap_session" || c.Value == "" {
			continue
		}
		if err := l.noteSession(strings.Trim(c.Value, `"`)); err != nil {
			log.Printf("lab: recording session: %v", err)
		}
	}
	copyRecorded(w, rec)
}

func (l *lab) noteSession(key string) error {
	sessionsMu.Lock()
	defer sessionsMu.Unlock()
	dir := filepath.Join(l.dir, "lab-state")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, "sessions"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(f, key); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
