//! A real Samba AD domain controller for tests (being built).
