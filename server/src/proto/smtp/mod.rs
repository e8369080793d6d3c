//! The SMTP session core (SPEC §6), arriving with the SMTP/POP3 issue.
