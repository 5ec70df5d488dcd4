"""Compute: instances and everything their life is made of in the core. The state machine
(``state``), launch requests (``launch``, with the SSH ports they take: ``ssh_ports``), queries,
actions and tags (``instances``; the rules of tags: ``tags``), the
read model both wire formats render (``view``), the background steps after the API
answered (``lifecycle``, run by ``worker``), where an instance goes (``scheduler``),
bringing the store and the hosts back into agreement (``reconcile``), forwarded ports
(``ports``), key pairs (``keypairs``), the size catalog (``sizes``) and fault injection for
the crash tests (``faults``). It reaches hypervisors only through ``computed.virt``."""
