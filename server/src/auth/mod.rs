//! SASL mechanisms as pure steppers (PLAIN, LOGIN, CRAM-MD5, APOP), arriving with the protocols.
