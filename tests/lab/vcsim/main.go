// Command lab-vcsim is the safekeeping lab's vCenter simulator: govmomi's vcsim with the
// pieces a backup tool needs added in front of it (changed block tracking, frozen snapshot
// disks, real disk files, .vmx files, RegisterVM from a .vmx, a 2048-bit certificate).
//
// It is started by `safekeeping-lab up`; see docs/lab.md.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	_ "github.com/vmware/govmomi/pbm/simulator" // storage policies under /pbm (pbm.go adds /pbm/sdk)
	"github.com/vmware/govmomi/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator" // the vAPI REST endpoints (tagging) under /rest
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

// Names of the lab inventory; they are reported in lab-server.json.
var (
	labDatastores = []string{"datastore1", "datastore2"}
	labNetworks   = []string{"VM Network", "Lab Network 2"}
)

func main() {
	dir := flag.String("dir", "", "lab directory (certificate, datastores, state)")
	user := flag.String("user", "administrator@vsphere.local", "the one user that may log in")
	passwordFile := flag.String("password-file", "", "file holding the password")
	writeCert := flag.String("write-cert", "", "only write a new self-signed certificate (PEM) for 127.0.0.1 and localhost here, its key to --write-key, and exit")
	writeKey := flag.String("write-key", "", "with --write-cert: where the private key goes (PEM, mode 0600)")
	flag.Parse()
	if *writeCert != "" || *writeKey != "" {
		if *writeCert == "" || *writeKey == "" {
			fmt.Fprintln(os.Stderr, "lab-vcsim: --write-cert and --write-key go together")
			os.Exit(2)
		}
		if err := writeCertAndKey(*writeCert, *writeKey); err != nil {
			fmt.Fprintf(os.Stderr, "lab-vcsim: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if *dir == "" || *passwordFile == "" {
		fmt.Fprintln(os.Stderr, "lab-vcsim: --dir and --password-file are required")
		os.Exit(2)
	}
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	if err := run(*dir, *user, *passwordFile); err != nil {
		log.Printf("lab-vcsim: %v", err)
		os.Exit(1)
	}
}

func run(dir, user, passwordFile string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	raw, err := ioutil.ReadFile(passwordFile)
	if err != nil {
		return fmt.Errorf("reading password file: %w", err)
	}
	password := strings.TrimSuffix(strings.TrimSuffix(string(raw), "\n"), "\r")
	if password == "" {
		return fmt.Errorf("password file %s is empty", passwordFile)
	}

	cert, err := makeCertificate(filepath.Join(dir, "lab-cert.pem"))
	if err != nil {
		return err
	}

	model := simulator.VPX()
	model.Datastore = 0 // our own, under dir/datastores
	model.Machine = 0
	model.Host = 0
	model.ClusterHost = 2
	if err := model.Create(); err != nil {
		return fmt.Errorf("creating inventory: %w", err)
	}
	instanceUUID := setInstanceUUID(dir) // sts.go: each lab is a vCenter of its own
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(user, password)}
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert.pair}}
	model.Service.RegisterEndpoints = true
	inner := model.Service.NewServer()
	// The simulator's own listener is not used: requests come through our front handler.
	inner.Close()

	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := listener.Addr().(*net.TCPAddr).Port
	host := fmt.Sprintf("127.0.0.1:%d", port)
	simulator.Map.SessionManager().ServiceHostName = host

	ctx := context.Background()
	client, err := vim25.NewClient(ctx, model.Service)
	if err != nil {
		return err
	}
	l := newLab(dir, user, password, model.Service, client)
	inv, err := l.buildInventory(ctx)
	if err != nil {
		return fmt.Errorf("building lab inventory: %w", err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/sdk", l.serveSDK)
	mux.HandleFunc("/lab/", l.serveAdmin)
	mux.HandleFunc("/folder/", l.serveFolder)
	mux.HandleFunc("/vslm/sdk", l.serveVSLM)
	mux.HandleFunc("/pbm/sdk", l.servePBM)
	mux.HandleFunc(restSessionPath, l.serveRESTSession(model.Service.ServeMux))
	mux.HandleFunc(stsPath, l.serveSTS(optionSettings())) // sts.go: SSO tokens
	mux.Handle("/", model.Service.ServeMux)
	server := &http.Server{
		Handler:   mux,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert.pair}, MinVersion: tls.VersionTLS12},
		ErrorLog:  log.New(os.Stderr, "http: ", log.LstdFlags),
	}

	info := serverInfo{
		URL:              fmt.Sprintf("https://%s/sdk", host),
		Port:             port,
		Pid:              os.Getpid(),
		User:             user,
		ThumbprintSHA1:   cert.sha1,
		ThumbprintSHA256: cert.sha256,
		InstanceUUID:     instanceUUID,
		Inventory:        inv,
	}
	if err := writeJSONAtomic(filepath.Join(dir, "lab-server.json"), info); err != nil {
		return err
	}
	log.Printf("lab-vcsim listening on https://%s/sdk", host)

	stop := make(chan os.Signal, 1)
	l.shutdown = func() {
		select {
		case stop <- syscall.SIGTERM:
		default:
		}
	}
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	signal.Ignore(syscall.SIGHUP) // detached from the terminal that ran `safekeeping-lab up`
	go func() {
		<-stop
		log.Printf("lab-vcsim: shutting down")
		c, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_ = server.Shutdown(c)
	}()
	if err := server.ServeTLS(listener, "", ""); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}

// serverInfo is written to DIR/lab-server.json once the server answers.
type serverInfo struct {
	URL              string    `json:"url"`
	Port             int       `json:"port"`
	Pid              int       `json:"pid"`
	User             string    `json:"user"`
	ThumbprintSHA1   string    `json:"thumbprint_sha1"`
	ThumbprintSHA256 string    `json:"thumbprint_sha256"`
	InstanceUUID     string    `json:"instance_uuid"` // the vCenter's about.instanceUuid
	Inventory        inventory `json:"inventory"`
}

// inventory names the lab's fixed objects.
type inventory struct {
	Datacenter      string            `json:"datacenter"`
	Cluster         string            `json:"cluster"`
	Hosts           []string          `json:"hosts"`
	Pool            string            `json:"pool"`
	VMFolder        string            `json:"vm_folder"`
	VMFolderMoref   string            `json:"vm_folder_moref"`
	PoolMoref       string            `json:"pool_moref"`
	Datastores      map[string]string `json:"datastores"`
	DatastoreMorefs map[string]string `json:"datastore_morefs"`
	Networks        []string          `json:"networks"`
	DVPortgroups    []string          `json:"dv_portgroups"`
}

// buildInventory adds the lab's datastores (backed by dir/datastores/NAME) and networks.
func (l *lab) buildInventory(ctx context.Context) (inventory, error) {
	inv := inventory{Datastores: map[string]string{}, DatastoreMorefs: map[string]string{}}
	finder := find.NewFinder(l.client, false)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		return inv, err
	}
	finder.SetDatacenter(dc)
	inv.Datacenter = dc.Name()
	clusters, err := finder.ClusterComputeResourceList(ctx, "*")
	if err != nil {
		return inv, err
	}
	inv.Cluster = clusters[0].Name()
	hosts, err := finder.HostSystemList(ctx, "*")
	if err != nil {
		return inv, err
	}
	for _, h := range hosts {
		inv.Hosts = append(inv.Hosts, h.Name())
	}
	pool, err := finder.DefaultResourcePool(ctx)
	if err != nil {
		return inv, err
	}
	inv.Pool = pool.InventoryPath
	inv.PoolMoref = pool.Reference().Value
	folders, err := dc.Folders(ctx)
	if err != nil {
		return inv, err
	}
	inv.VMFolder = folders.VmFolder.InventoryPath
	inv.VMFolderMoref = folders.VmFolder.Reference().Value

	for _, name := range labDatastores {
		path := filepath.Join(l.dir, "datastores", name)
		if err := os.MkdirAll(path, 0o700); err != nil {
			return inv, err
		}
		for _, h := range hosts {
			dss, err := h.ConfigManager().DatastoreSystem(ctx)
			if err != nil {
				return inv, err
			}
			if _, err := dss.CreateLocalDatastore(ctx, name, path); err != nil {
				return inv, fmt.Errorf("datastore %s on %s: %w", name, h.Name(), err)
			}
		}
		inv.Datastores[name] = path
		ds, err := finder.Datastore(ctx, name)
		if err != nil {
			return inv, err
		}
		inv.DatastoreMorefs[name] = ds.Reference().Value
	}

	for _, name := range labNetworks {
		if _, err := finder.Network(ctx, name); err == nil {
			inv.Networks = append(inv.Networks, name)
			continue
		}
		for i, h := range hosts {
			ns, err := h.ConfigManager().NetworkSystem(ctx)
			if err != nil {
				return inv, err
			}
			err = ns.AddPortGroup(ctx, types.HostPortGroupSpec{Name: name, VswitchName: "vSwitch0"})
			if err != nil && i == 0 {
				return inv, fmt.Errorf("port group %s: %w", name, err)
			}
		}
		inv.Networks = append(inv.Networks, name)
	}
	nets, err := finder.NetworkList(ctx, "*")
	if err != nil {
		return inv, err
	}
	for _, n := range nets {
		if pg, ok := n.(*object.DistributedVirtualPortgroup); ok {
			inv.DVPortgroups = append(inv.DVPortgroups, pg.Name())
		}
	}
	return inv, nil
}
