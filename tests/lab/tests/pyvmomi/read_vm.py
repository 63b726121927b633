"""Reads a lab VM through pyVmomi's property accessors (the SOAP `Fetch` method) and prints
what it read as JSON, for tests/lab/tests/pyvmomi.rs to compare with `safekeeping-lab vm-info`.

Usage: python read_vm.py LAB_JSON VM_NAME

LAB_JSON is the lab's lab.json: the URL, the user, the password file and the CA file come from
it (the password is read from its file, never passed on the command line).
"""

import json
import ssl
import sys
from urllib.parse import urlsplit

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl


def moref(obj):
    return obj._moId if obj is not None else None


def disk_info(dev):
    b = dev.backing
    return {
        "key": dev.key,
        "path": b.fileName,
        "capacity": dev.capacityInBytes,
        "controller_key": dev.controllerKey,
        "unit": dev.unitNumber,
        "uuid": getattr(b, "uuid", None),
        "change_id": getattr(b, "changeId", None),
        "datastore": moref(getattr(b, "datastore", None)),
    }


def nic_info(dev):
    b = dev.backing
    network = getattr(b, "deviceName", None)
    return {
        "key": dev.key,
        "type": type(dev).__name__.rsplit(".", 1)[-1],
        "mac": dev.macAddress,
        "address_type": dev.addressType,
        "network": network,
    }


def devices(hw):
    out = {"disks": [], "nics": [], "controllers": []}
    for dev in hw.device:
        if isinstance(dev, vim.vm.device.VirtualDisk):
            out["disks"].append(disk_info(dev))
        elif isinstance(dev, vim.vm.device.VirtualEthernetCard):
            out["nics"].append(nic_info(dev))
        elif isinstance(dev, vim.vm.device.VirtualSCSIController):
            out["controllers"].append(
                {"key": dev.key, "bus": dev.busNumber, "type": type(dev).__name__.rsplit(".", 1)[-1]}
            )
    return out


def snapshot_tree(nodes, parent, out):
    for node in nodes:
        snap = node.snapshot
        # The snapshot object's own properties, read through its accessor too.
        config = snap.config
        out.append(
            {
                "moref": moref(snap),
                "name": node.name,
                "id": node.id,
                "parent": parent,
                "quiesced": node.quiesced,
                "vm": moref(node.vm),
                "disks": [d["path"] for d in devices(config.hardware)["disks"]],
                "change_ids": [d["change_id"] for d in devices(config.hardware)["disks"]],
                "child_snapshots": [moref(c) for c in (snap.childSnapshot or [])],
            }
        )
        snapshot_tree(node.childSnapshotList or [], moref(snap), out)


def main():
    lab_json, vm_name = sys.argv[1], sys.argv[2]
    with open(lab_json) as f:
        lab = json.load(f)
    with open(lab["password_file"]) as f:
        password = f.read()
    url = urlsplit(lab["url"])
    context = ssl.create_default_context(cafile=lab["ca_file"])
    si = SmartConnect(
        host=url.hostname, port=url.port, user=lab["user"], pwd=password, sslContext=context
    )
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        vms = [vm for vm in view.view if vm.name == vm_name]
        view.Destroy()
        if len(vms) != 1:
            raise SystemExit(f"{len(vms)} VMs named {vm_name}")
        vm = vms[0]
        config = vm.config
        runtime = vm.runtime
        # Every property read on its own as well, each one a Fetch of that path.
        snapshot = vm.snapshot
        layout = vm.layoutEx
        files = config.files
        out = {
            "moref": moref(vm),
            "name": vm.name,
            "uuid": config.uuid,
            "instance_uuid": config.instanceUuid,
            "guest_id": config.guestId,
            "firmware": config.firmware,
            "cpus": config.hardware.numCPU,
            "memory_mb": config.hardware.memoryMB,
            "template": config.template,
            "change_tracking": config.changeTrackingEnabled,
            "vmx_path": files.vmPathName,
            "snapshot_directory": files.snapshotDirectory,
            "power_state": str(runtime.powerState),
            "runtime_power_state": str(vm.runtime.powerState),
            "host": moref(runtime.host),
            "resource_pool": moref(vm.resourcePool),
            "parent": moref(vm.parent),
            "parent_vapp": moref(vm.parentVApp),
            "datastores": [moref(d) for d in vm.datastore],
            "networks": [n.name for n in vm.network],
            "snapshot_is_unset": snapshot is None,
            "root_snapshots": [],
            "snapshots": [],
            "current_snapshot": None,
            "layout_files": sorted(f.name for f in (layout.file or [])) if layout is not None else None,
            "layout_snapshots": sorted(moref(s.key) for s in (layout.snapshot or []))
            if layout is not None
            else None,
            "layout_disks": {},
            "layout_snapshot_disks": {},
        }
        if layout is not None:
            names = {f.key: f.name for f in (layout.file or [])}

            def chains(disk_layouts):
                return {
                    str(d.key): [[names.get(k) for k in unit.fileKey] for unit in (d.chain or [])]
                    for d in (disk_layouts or [])
                }

            out["layout_disks"] = chains(layout.disk)
            out["layout_snapshot_disks"] = {
                moref(s.key): chains(s.disk) for s in (layout.snapshot or [])
            }
        out.update(devices(config.hardware))
        if snapshot is not None:
            out["current_snapshot"] = moref(snapshot.currentSnapshot)
            out["root_snapshots"] = [moref(n.snapshot) for n in snapshot.rootSnapshotList]
            snapshot_tree(snapshot.rootSnapshotList, None, out["snapshots"])
        # An object that does not exist: vCenter's ManagedObjectNotFound, not a SystemError.
        try:
            vim.VirtualMachine("vm-999999", si._stub).name
            out["missing_vm_fault"] = None
        except vmodl.fault.ManagedObjectNotFound:
            out["missing_vm_fault"] = "ManagedObjectNotFound"
        except Exception as e:  # noqa: BLE001 - reported to the test as it is
            out["missing_vm_fault"] = type(e).__name__
        print(json.dumps(out, indent=2, sort_keys=True))
    finally:
        Disconnect(si)


if __name__ == "__main__":
    main()
