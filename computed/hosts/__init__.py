"""Hosts: the hypervisor hosts instances run on. The registry of hosts in the store: their
names and libvirt URIs and what is refused of them, this process's driver for each
(``computed.virt.driver``) and their reachability (``registry``), what a host may take under the
overcommit ratios and what its instances take (``capacity``), what the API shows about
them besides their rows (``status``), and whether a port is free on an address of this
machine (``addresses``)."""
