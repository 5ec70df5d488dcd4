"""The libvirt implementation of the host driver (``computed.virt.driver``): a connection to
one libvirt URI (``connection``) and a copy-mode host's storage through libvirt's storage
API (``copy_storage``). The only package of the project that imports ``libvirt``; libvirt's
test driver (``test:///...``) is a configuration of it, with the capabilities it has."""
