//! POP3 command lines (RFC 1939, 2449, 2595, 5034) parsed into [`Command`]s.

use crate::names::Secret;

/// A message number as the client wrote it: 1-based, not yet checked against the maildrop.
pub type MessageNumber = u32;

/// One command line, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    User(String),
    /// The rest of the line: a password may hold spaces.
    Pass(Secret),
    Apop {
        name: String,
        digest: String,
    },
    /// `AUTH` alone lists the mechanisms (RFC 5034 allows that as a convenience).
    Auth {
        mechanism: Option<String>,
        initial: Option<String>,
    },
    Capa,
    Stls,
    Stat,
    List(Option<MessageNumber>),
    Uidl(Option<MessageNumber>),
    Retr(MessageNumber),
    Top(MessageNumber, u32),
    Dele(MessageNumber),
    Noop,
    Rset,
    Quit,
}

/// Why a line is not a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Syntax(&'static str),
}

pub fn parse(line: &[u8]) -> Result<Command, Refusal> {
    let text = String::from_utf8_lossy(line);
    let (keyword, rest) = match text.split_once(' ') {
        Some((keyword, rest)) => (keyword, rest),
        None => (text.as_ref(), ""),
    };
    let args: Vec<&str> = rest.split(' ').filter(|a| !a.is_empty()).collect();
    let keyword = keyword.to_ascii_uppercase();
    let none = |command| {
        if args.is_empty() {
            Ok(command)
        } else {
            Err(Refusal::Syntax("this command takes no argument"))
        }
    };
    match keyword.as_str() {
        "USER" => match args.as_slice() {
            [name] => Ok(Command::User((*name).to_owned())),
            _ => Err(Refusal::Syntax("USER name")),
        },
        "PASS" if !rest.is_empty() => Ok(Command::Pass(Secret::new(rest))),
        "PASS" => Err(Refusal::Syntax("PASS password")),
        "APOP" => match args.as_slice() {
            [name, digest]
                if digest.len() == 32 && digest.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Ok(Command::Apop {
                    name: (*name).to_owned(),
                    digest: digest.to_ascii_lowercase(),
                })
            }
            _ => Err(Refusal::Syntax("APOP name digest (32 hexadecimal digits)")),
        },
        "AUTH" => match args.as_slice() {
            [] => Ok(Command::Auth {
                mechanism: None,
                initial: None,
            }),
            [mechanism] => Ok(Command::Auth {
                mechanism: Some((*mechanism).to_owned()),
                initial: None,
            }),
            [mechanism, initial] => Ok(Command::Auth {
                mechanism: Some((*mechanism).to_owned()),
                initial: Some((*initial).to_owned()),
            }),
            _ => Err(Refusal::Syntax("AUTH mechanism [initial-response]")),
        },
        "CAPA" => none(Command::Capa),
        "STLS" => none(Command::Stls),
        "STAT" => none(Command::Stat),
        "NOOP" => none(Command::Noop),
        "RSET" => none(Command::Rset),
        "QUIT" => none(Command::Quit),
        "LIST" | "UIDL" => {
            let number = match args.as_slice() {
                [] => None,
                [n] => Some(number(n)?),
                _ => return Err(Refusal::Syntax("LIST or UIDL [message number]")),
            };
            Ok(if keyword == "LIST" {
                Command::List(number)
            } else {
                Command::Uidl(number)
            })
        }
        "RETR" | "DELE" => match args.as_slice() {
            [n] => {
                let n = number(n)?;
                Ok(if keyword == "RETR" {
                    Command::Retr(n)
                } else {
                    Command::Dele(n)
                })
            }
            _ => Err(Refusal::Syntax("RETR or DELE message number")),
        },
        "TOP" => match args.as_slice() {
            [n, lines] => Ok(Command::Top(
                number(n)?,
                lines
                    .parse()
                    .map_err(|_| Refusal::Syntax("TOP message number and line count"))?,
            )),
            _ => Err(Refusal::Syntax("TOP message number and line count")),
        },
        _ => Err(Refusal::Unknown),
    }
}

fn number(text: &str) -> Result<MessageNumber, Refusal> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::Syntax(
            "a message number is a positive decimal number",
        ));
    }
    text.parse()
        .map_err(|_| Refusal::Syntax("a message number is a positive decimal number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse(b"user tim"), Ok(Command::User("tim".into())));
        assert_eq!(
            parse(b"PASS with space"),
            Ok(Command::Pass(Secret::new("with space")))
        );
        assert_eq!(
            parse(b"APOP mrose c4c9334bac560ecc979e58001b3e22fb"),
            Ok(Command::Apop {
                name: "mrose".into(),
                digest: "c4c9334bac560ecc979e58001b3e22fb".into()
            })
        );
        assert_eq!(parse(b"list"), Ok(Command::List(None)));
        assert_eq!(parse(b"LIST 2"), Ok(Command::List(Some(2))));
        assert_eq!(parse(b"TOP 1 10"), Ok(Command::Top(1, 10)));
        assert!(matches!(parse(b"TOP 1"), Err(Refusal::Syntax(_))));
        assert!(matches!(parse(b"RETR -1"), Err(Refusal::Syntax(_))));
        assert!(matches!(parse(b"RETR +1"), Err(Refusal::Syntax(_))));
        assert!(matches!(
            parse(b"RETR 99999999999"),
            Err(Refusal::Syntax(_))
        ));
        assert!(matches!(parse(b"APOP mrose xyz"), Err(Refusal::Syntax(_))));
        assert!(matches!(parse(b"STAT 1"), Err(Refusal::Syntax(_))));
        assert_eq!(parse(b"XTND"), Err(Refusal::Unknown));
        assert_eq!(parse(b""), Err(Refusal::Unknown));
    }
}
