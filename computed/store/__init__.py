"""The store: the database every service process shares. Its engine and sessions
(``engine``), its tables (``models``) and their Alembic migrations (``migrations/``), the
registry of service processes on it (``processes``), the paging token of its listings
(``page_token``), an online backup (``backup``) and the store's id that its domains carry
(``identity``). Nothing here knows libvirt."""
