//! The POP3 session core (SPEC §7), arriving with the SMTP/POP3 issue.
