package main

import (
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// secureVMRequest is the body of /lab/secure-vm: make a VM look encrypted (config.keyId, as
// vCenter reports a VM encrypted through a key provider) and/or give it a virtual TPM device.
// vcsim has neither a key provider nor vTPM support of its own.
type secureVMRequest struct {
	VM        string `json:"vm"`
	Encrypted bool   `json:"encrypted"`
	VTPM      bool   `json:"vtpm"`
}

// labTPMKey is the device key the lab gives a vTPM (vCenter uses 11000 for the first one).
const labTPMKey = 11000

func (l *lab) secureVM(req *secureVMRequest) (interface{}, error) {
	vm, err := findVM(req.VM)
	if err != nil {
		return nil, err
	}
	simulator.Map.WithLock(vm, func() {
		if req.Encrypted {
			vm.Config.KeyId = &types.CryptoKeyId{
				KeyId:      "lab-key-" + vm.Self.Value,
				ProviderId: &types.KeyProviderId{Id: "lab-kms"},
			}
		}
		if req.VTPM {
			for _, d := range vm.Config.Hardware.Device {
				if _, ok := d.(*types.VirtualTPM); ok {
					return
				}
			}
			vm.Config.Hardware.Device = append(vm.Config.Hardware.Device, &types.VirtualTPM{
				VirtualDevice: types.VirtualDevice{
					Key:        labTPMKey,
					DeviceInfo: &types.Description{Label: "Virtual TPM", Summary: "Virtual TPM"},
				},
			})
		}
	})
	return map[string]interface{}{"vm": vm.Name, "encrypted": vm.Config.KeyId != nil, "vtpm": req.VTPM}, nil
}
