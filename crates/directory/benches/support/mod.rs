//! What the login benches share: a real store in a temporary directory with one domain and one
//! mailbox, `bob@example.jp`, whose account lives where the authentication method keeps it.

use std::path::Path;

use dirmail_config::StoreConfig;
use dirmail_directory::passwd_file::PasswdFile;
use dirmail_directory::{AuthMethod, local::LocalAccounts};
use dirmail_proto::names::{Address, DomainName, MailboxName, Secret};
use dirmail_store::{Store, find_domain, insert_domain, insert_mailbox, layout, set_setting};

/// The one mailbox of [`store_with_bob`].
pub const BOB: &str = "bob@example.jp";

/// A store with `example.jp` and [`BOB`], whose password is `password`, under `method_name`
/// (`local`: an account in the database; `passwd-file`: a record in the Maildir).
pub fn store_with_bob(root: &Path, method_name: &str, password: &str) -> Store {
    let config = StoreConfig {
        data_dir: root.join("data"),
        mailroot: root.join("data/mail"),
    };
    let store = Store::open(&config).expect("store");
    let conn = store.conn();
    set_setting(conn, "authentication", method_name).expect("authentication");
    let domain = DomainName::parse("example.jp").expect("domain");
    insert_domain(conn, &domain).expect("domain");
    let id = find_domain(conn, &domain).expect("query").expect("made").id;
    let name = MailboxName::parse("bob", 64).expect("name");
    insert_mailbox(conn, id, &name).expect("mailbox");
    let address = Address::parse(BOB, 64).expect("address");
    let password = Secret::new(password);
    match AuthMethod::parse(method_name).expect("a method") {
        AuthMethod::Local => LocalAccounts::new(conn)
            .create("bob", &password, &[])
            .expect("account"),
        _ => {
            let dir = layout(conn)
                .expect("layout")
                .maildir(&config.mailroot, &address);
            std::fs::create_dir_all(&dir).expect("maildir");
            PasswdFile::new(dir)
                .write(&address, &password)
                .expect("record");
        }
    }
    store
}
