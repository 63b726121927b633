package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// placeVMRequest moves a VM in the inventory, creating what is missing on the way: a nested
// VM folder, a cluster (with one host of its own) and nested resource pools. Inventory
// selections (folder:, cluster:, host:, rp:) are tested against VMs placed this way.
type placeVMRequest struct {
	VM string `json:"vm"`
	// Folder is a path below the datacenter's VM folder ("prod/web").
	Folder string `json:"folder"`
	// Cluster names a cluster; the VM moves to its root pool and first host.
	Cluster string `json:"cluster"`
	// Pool is a path below the cluster's root pool ("gold/db"): the VM's cluster, or Cluster.
	Pool string `json:"pool"`
}

func (l *lab) placeVM(ctx context.Context, req *placeVMRequest) (interface{}, error) {
	vm, err := findVM(req.VM)
	if err != nil {
		return nil, err
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
	if req.Folder != "" {
		f := folders.VmFolder
		for _, part := range splitPath(req.Folder) {
			path := f.InventoryPath + "/" + part
			child, err := finder.Folder(ctx, path)
			if err != nil {
				if child, err = f.CreateFolder(ctx, part); err != nil {
					return nil, fmt.Errorf("creating folder %s: %v", path, err)
				}
				child.InventoryPath = path
			}
			f = child
		}
		task, err := f.MoveInto(ctx, []types.ManagedObjectReference{vm.Self})
		if err == nil {
			_, err = task.WaitForResult(ctx, nil)
		}
		if err != nil {
			return nil, fmt.Errorf("moving %s into %s: %v", req.VM, f.InventoryPath, err)
		}
	}
	var cluster *object.ClusterComputeResource
	if req.Cluster != "" {
		if cluster, err = l.ensureCluster(ctx, finder, folders.HostFolder, req.Cluster); err != nil {
			return nil, err
		}
		root, err := cluster.ResourcePool(ctx)
		if err != nil {
			return nil, err
		}
		hosts, err := cluster.Hosts(ctx)
		if err != nil || len(hosts) == 0 {
			return nil, fmt.Errorf("cluster %s has no host", req.Cluster)
		}
		host := hosts[0].Reference()
		moveVM(vm, root.Reference(), &host)
	}
	if req.Pool != "" {
		if cluster == nil {
			host := simulator.Map.Get(*vm.Runtime.Host).(*simulator.HostSystem)
			cluster = object.NewClusterComputeResource(l.client, *host.Parent)
		}
		root, err := cluster.ResourcePool(ctx)
		if err != nil {
			return nil, err
		}
		p := root
		for _, part := range splitPath(req.Pool) {
			path := p.InventoryPath + "/" + part
			child, err := finder.ResourcePool(ctx, path)
			if err != nil {
				if child, err = p.Create(ctx, part, types.DefaultResourceConfigSpec()); err != nil {
					return nil, fmt.Errorf("creating resource pool %s: %v", path, err)
				}
				child.InventoryPath = path
			}
			p = child
		}
		moveVM(vm, p.Reference(), nil)
	}
	return l.placement(vm)
}

// ensureCluster finds cluster name or creates it with one host.
func (l *lab) ensureCluster(ctx context.Context, finder *find.Finder, hostFolder *object.Folder, name string) (*object.ClusterComputeResource, error) {
	if c, err := finder.ClusterComputeResource(ctx, name); err == nil {
		return c, nil
	}
	c, err := hostFolder.CreateCluster(ctx, name, types.ClusterConfigSpecEx{})
	if err != nil {
		return nil, fmt.Errorf("creating cluster %s: %v", name, err)
	}
	spec := types.HostConnectSpec{HostName: name + "_H0", UserName: "root", Force: true}
	task, err := c.AddHost(ctx, spec, true, nil, nil)
	if err == nil {
		_, err = task.WaitForResult(ctx, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("adding a host to cluster %s: %v", name, err)
	}
	c.InventoryPath = hostFolder.InventoryPath + "/" + name
	return c, nil
}

// moveVM puts vm into pool (and onto host): the simulator's RelocateVM does not update the
// pools' and hosts' vm lists, which container views and the `vm` properties read.
func moveVM(vm *simulator.VirtualMachine, pool types.ManagedObjectReference, host *types.ManagedObjectReference) {
	if old := vm.ResourcePool; old != nil {
		if p, ok := simulator.Map.Get(*old).(*simulator.ResourcePool); ok {
			simulator.Map.RemoveReference(p, &p.Vm, vm.Self)
		}
	}
	newPool := simulator.Map.Get(pool).(*simulator.ResourcePool)
	simulator.Map.AddReference(newPool, &newPool.Vm, vm.Self)
	changes := []types.PropertyChange{{Name: "resourcePool", Val: pool}}
	if host != nil {
		if old := vm.Runtime.Host; old != nil {
			if h, ok := simulator.Map.Get(*old).(*simulator.HostSystem); ok {
				simulator.Map.RemoveReference(h, &h.Vm, vm.Self)
			}
		}
		h := simulator.Map.Get(*host).(*simulator.HostSystem)
		simulator.Map.AddReference(h, &h.Vm, vm.Self)
		changes = append(changes,
			types.PropertyChange{Name: "runtime.host", Val: *host},
			types.PropertyChange{Name: "summary.runtime.host", Val: *host},
		)
	}
	simulator.Map.Update(vm, changes)
}

// placement reports where vm is now: folder, pool and host by name.
func (l *lab) placement(vm *simulator.VirtualMachine) (interface{}, error) {
	out := map[string]string{"moref": vm.Self.Value}
	if vm.Parent != nil {
		if f, ok := simulator.Map.Get(*vm.Parent).(*simulator.Folder); ok {
			out["folder"] = f.Name
		}
	}
	if vm.ResourcePool != nil {
		if p, ok := simulator.Map.Get(*vm.ResourcePool).(*simulator.ResourcePool); ok {
			out["pool"] = p.Name
		}
	}
	if vm.Runtime.Host != nil {
		if h, ok := simulator.Map.Get(*vm.Runtime.Host).(*simulator.HostSystem); ok {
			out["host"] = h.Name
		}
	}
	return out, nil
}

func splitPath(p string) []string {
	var out []string
	for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
		if part != "" {
			out = append(out, part)
		}
	}
	return out
}
