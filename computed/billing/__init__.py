"""Billing: what running instances cost. The rating arithmetic of usage events under a
billing policy (``metering``), reports and the cost so far from the store's runs
(``reports``), the cost accrued since the first event (``accrued``), monthly budgets
(``budgets``) and whether one refuses a launch or start now (``admission``), the hourly chart (``chart``) and the collector pause bulk reports use
(``gc_pause``). It reads the store; it never reaches a hypervisor (``computed.virt``)."""
