"""Virt: what an instance is on a hypervisor host. The interface the core needs of a host's
hypervisor (``driver``) and its one implementation, libvirt (``virt.libvirt``: the only
package that imports ``libvirt``); a domain's XML (``domain_xml``); the cloud-init seed
(``cloudinit``); where an instance's files live (``storage``); the steps that make and
remove an instance on its host (``provisioner``) and how one fails (``errors``); SSH to
guests (``ssh``) with the service's own key (``management_key``)."""
