"""computed: self-hosted, EC2-style virtual machines on libvirt/QEMU."""

__version__ = "0.1.0"
