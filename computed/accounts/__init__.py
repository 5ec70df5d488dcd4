"""Accounts: who acts. Accounts and the caller a request acts as (``registry``), their
access keys: two at most, active or not, last used when (``access_keys``), the sealed
secrets (``secret_box``) and the web console's logins (``console_sessions``)."""
