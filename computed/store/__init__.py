"""The store: the database every service process shares. Its engine and sessions
(``engine``), its tables (``models``) and their Alembic migrations (``migrations/``), the
registry of service processes on it (``processes``), the paging token of its listings
(``page_token``) and an online backup (``backup``). Nothing here knows libvirt."""
