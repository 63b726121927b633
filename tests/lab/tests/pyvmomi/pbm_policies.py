"""Talks to the lab's storage policy service (SPBM, /pbm/sdk) with pyVmomi's own PBM bindings,
as vSphere tooling does: the session is the VIM login's, carried in the vcSessionCookie SOAP
header. Prints JSON for tests/lab/tests/pbm.rs: the storage policies by name, the policies
associated with a VM's home and first disk, and the fault a bogus session cookie gets.

Usage: python pbm_policies.py LAB_JSON VM_NAME

LAB_JSON is the lab's lab.json (URL, user, password file, CA file); the password is read from
its file, never passed on the command line.
"""

import json
import ssl
import sys
from urllib.parse import urlsplit

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import SoapStubAdapter, VmomiSupport, pbm, vim, vmodl


def session_cookie(header):
    """The bare vmware_soap_session value of the VIM stub's cookie (vCenter quotes it)."""
    value = header.split("=", 1)[1].split(";", 1)[0]
    return value.strip('"')


def pbm_content(url, context, cookie):
    stub = SoapStubAdapter(
        host=url.hostname,
        port=url.port,
        path="/pbm/sdk",
        version=VmomiSupport.newestVersions.Get("pbm"),
        sslContext=context,
        requestContext={"vcSessionCookie": cookie},
    )
    return pbm.ServiceInstance("ServiceInstance", stub).RetrieveContent()


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
        disk = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)][0]
        cookie = session_cookie(si._stub.cookie)
        manager = pbm_content(url, context, cookie).profileManager
        ids = manager.PbmQueryProfile(
            resourceType=pbm.profile.ResourceType(resourceType="STORAGE"),
            profileCategory="REQUIREMENT",
        )
        names = {p.profileId.uniqueId: p.name for p in manager.PbmRetrieveContent(profileIds=ids)}
        uuid = content.about.instanceUuid
        results = manager.PbmQueryAssociatedProfiles(
            entities=[
                pbm.ServerObjectRef(objectType="virtualMachine", key=vm._moId, serverUuid=uuid),
                pbm.ServerObjectRef(
                    objectType="virtualDiskId", key=f"{vm._moId}:{disk.key}", serverUuid=uuid
                ),
            ]
        )
        associated = {
            r.object.objectType: [names.get(p.uniqueId, p.uniqueId) for p in r.profileId]
            for r in results
        }
        try:
            pbm_content(url, context, "bogus").profileManager.PbmQueryProfile(
                resourceType=pbm.profile.ResourceType(resourceType="STORAGE")
            )
            bogus = None
        except vmodl.MethodFault as e:
            bogus = type(e).__name__.rsplit(".", 1)[-1]
        print(json.dumps({"policies": sorted(names.values()), "associated": associated, "bogus_session": bogus}))
    finally:
        Disconnect(si)


if __name__ == "__main__":
    main()
