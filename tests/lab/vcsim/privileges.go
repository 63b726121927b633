package main

import (
	"github.com/vmware/govmomi/vim25/types"
)

// hasPrivilegeOnEntities answers HasPrivilegeOnEntities as vCenter does for a user whose
// role grants everything except the knobs' denied privileges (vcsim alone grants all).
func (l *lab) hasPrivilegeOnEntities(req *types.HasPrivilegeOnEntities) *types.HasPrivilegeOnEntitiesResponse {
	l.mu.Lock()
	denied := map[string]bool{}
	for _, p := range l.knobs.DeniedPrivileges {
		denied[p] = true
	}
	l.mu.Unlock()
	res := &types.HasPrivilegeOnEntitiesResponse{}
	for _, e := range req.Entity {
		priv := types.EntityPrivilege{Entity: e}
		for _, id := range req.PrivId {
			priv.PrivAvailability = append(priv.PrivAvailability, types.PrivilegeAvailability{
				PrivId:    id,
				IsGranted: !denied[id],
			})
		}
		res.Returnval = append(res.Returnval, priv)
	}
	return res
}
