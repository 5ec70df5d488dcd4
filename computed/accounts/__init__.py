"""Accounts: who acts. Accounts, their access keys and the caller a request acts as
(``registry``), the sealed secrets (``secret_box``) and the web console's logins
(``console_sessions``)."""
