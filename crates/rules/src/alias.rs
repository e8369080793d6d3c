//! R28: how an address that is not a mailbox becomes the mailboxes and outside addresses it
//! stands for (aliases, the catch-all, postmaster), with a depth limit, loop detection and one
//! entry per final destination. The walk is here, on a lookup the caller gives; the store
//! answers the lookups, so the same walk refuses a loop when an alias is made and again at RCPT.

use std::collections::HashSet;

/// How deep aliases may point at aliases: `a → b → c` is depth 3.
pub const MAX_DEPTH: usize = 8;

/// At most this many addresses are looked at in one expansion, so an expansion's memory and
/// time are bounded whatever the store holds.
pub const MAX_ADDRESSES: usize = 1000;

/// What one address is, as the caller's lookup finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node<M> {
    /// A local mailbox (final).
    Mailbox(M),
    /// An alias (or the catch-all, or a postmaster pointed elsewhere): its targets, each an
    /// address to look up in turn.
    Alias(Vec<String>),
    /// Outside the local domains (final): delivered through the outbound queue.
    Outside,
    /// A local domain without such an address.
    Unknown,
}

/// Where an address's mail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expansion<M> {
    /// Each final mailbox once, in the order first reached.
    pub mailboxes: Vec<M>,
    /// Each outside address once (compared without regard to case), in the order first reached.
    pub outside: Vec<String>,
    /// Targets that name nothing (changed behind the tool's back): skipped, for the log.
    pub dangling: Vec<String>,
    /// Whether an alias was followed (false: the address is a mailbox or outside itself).
    pub through_alias: bool,
}

impl<M> Expansion<M> {
    /// Nothing to deliver to.
    pub fn is_empty(&self) -> bool {
        self.mailboxes.is_empty() && self.outside.is_empty()
    }
}

/// Why an address could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError<E> {
    /// The path that came back to an address already on it, ending with that address.
    #[error("alias loop: {}", .0.join(" → "))]
    Loop(Vec<String>),
    #[error("aliases nested deeper than {MAX_DEPTH}: {}", .0.join(" → "))]
    TooDeep(Vec<String>),
    #[error("the expansion reaches more than {MAX_ADDRESSES} addresses")]
    TooMany,
    #[error(transparent)]
    Lookup(E),
}

/// R28: expands `address` by following aliases with `lookup`. An address met again on the path
/// that led to it is a loop, and a path longer than [`MAX_DEPTH`] is refused, as is an expansion
/// of more than [`MAX_ADDRESSES`] addresses; an address reached twice by different paths is
/// delivered once (a mailbox is compared with `same`). Addresses are compared without regard to
/// case. A target that names nothing is skipped and reported in `dangling`; the caller refuses
/// the address when nothing is left.
pub fn r28_expand<M, E>(
    address: &str,
    mut lookup: impl FnMut(&str) -> Result<Node<M>, E>,
    same: impl Fn(&M, &M) -> bool,
) -> Result<Expansion<M>, ExpandError<E>> {
    let mut walk = Walk {
        expansion: Expansion {
            mailboxes: Vec::new(),
            outside: Vec::new(),
            dangling: Vec::new(),
            through_alias: false,
        },
        path: Vec::new(),
        done: HashSet::new(),
        looked_at: 0,
    };
    walk.visit(address, &mut lookup, &same)?;
    Ok(walk.expansion)
}

struct Walk<M> {
    expansion: Expansion<M>,
    /// The addresses from the start to the one being expanded (lower case).
    path: Vec<String>,
    /// Aliases already expanded whole: reached again by another path, they add nothing.
    done: HashSet<String>,
    looked_at: usize,
}

impl<M> Walk<M> {
    fn visit<E>(
        &mut self,
        address: &str,
        lookup: &mut impl FnMut(&str) -> Result<Node<M>, E>,
        same: &impl Fn(&M, &M) -> bool,
    ) -> Result<(), ExpandError<E>> {
        let key = address.to_lowercase();
        if self.path.contains(&key) {
            let mut path = self.path.clone();
            path.push(key);
            return Err(ExpandError::Loop(path));
        }
        if self.done.contains(&key) {
            return Ok(());
        }
        self.looked_at += 1;
        if self.looked_at > MAX_ADDRESSES {
            return Err(ExpandError::TooMany);
        }
        match lookup(address).map_err(ExpandError::Lookup)? {
            Node::Mailbox(m) => {
                if !self.expansion.mailboxes.iter().any(|seen| same(seen, &m)) {
                    self.expansion.mailboxes.push(m);
                }
            }
            Node::Outside => {
                if !self
                    .expansion
                    .outside
                    .iter()
                    .any(|seen| seen.eq_ignore_ascii_case(address))
                {
                    self.expansion.outside.push(address.to_owned());
                }
            }
            Node::Unknown => {
                // The address asked for itself is simply unknown; a target is dangling.
                if !self.path.is_empty() {
                    self.expansion.dangling.push(address.to_owned());
                }
            }
            Node::Alias(targets) => {
                if self.path.len() >= MAX_DEPTH {
                    let mut path = self.path.clone();
                    path.push(key);
                    return Err(ExpandError::TooDeep(path));
                }
                self.expansion.through_alias = true;
                self.path.push(key.clone());
                for target in &targets {
                    self.visit(target, lookup, same)?;
                }
                self.path.pop();
                self.done.insert(key);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A lookup over a table: `name → targets` for aliases, `box:` prefixed names are mailboxes,
    /// anything with `@outside` is outside.
    fn table(aliases: &[(&str, &[&str])]) -> impl FnMut(&str) -> Result<Node<String>, ()> {
        let map: HashMap<String, Vec<String>> = aliases
            .iter()
            .map(|(a, t)| (a.to_string(), t.iter().map(|s| s.to_string()).collect()))
            .collect();
        move |address: &str| {
            let address = address.to_lowercase();
            Ok(if let Some(targets) = map.get(&address) {
                Node::Alias(targets.clone())
            } else if address.starts_with("box") {
                Node::Mailbox(address)
            } else if address.ends_with("@outside") {
                Node::Outside
            } else {
                Node::Unknown
            })
        }
    }

    fn expand(
        address: &str,
        aliases: &[(&str, &[&str])],
    ) -> Result<Expansion<String>, ExpandError<()>> {
        r28_expand(address, table(aliases), |a, b| a == b)
    }

    #[test]
    fn a_mailbox_is_itself() {
        let e = expand("box1@d", &[]).unwrap();
        assert_eq!(e.mailboxes, ["box1@d"]);
        assert!(!e.through_alias);
    }

    #[test]
    fn one_copy_per_final_mailbox_even_when_reached_twice() {
        let e = expand(
            "all@d",
            &[
                ("all@d", &["team@d", "box1@d", "x@outside", "X@OUTSIDE"]),
                ("team@d", &["box1@d", "box2@d"]),
            ],
        )
        .unwrap();
        assert_eq!(e.mailboxes, ["box1@d", "box2@d"]);
        assert_eq!(e.outside, ["x@outside"]);
        assert!(e.through_alias);
    }

    #[test]
    fn a_diamond_is_not_a_loop() {
        let e = expand(
            "a@d",
            &[
                ("a@d", &["b@d", "c@d"]),
                ("b@d", &["z@d"]),
                ("c@d", &["z@d"]),
                ("z@d", &["box1@d"]),
            ],
        )
        .unwrap();
        assert_eq!(e.mailboxes, ["box1@d"]);
    }

    #[test]
    fn loops_are_refused_with_their_path() {
        assert_eq!(
            expand("a@d", &[("a@d", &["b@d"]), ("b@d", &["A@d"])]),
            Err(ExpandError::Loop(vec![
                "a@d".into(),
                "b@d".into(),
                "a@d".into()
            ]))
        );
        assert!(matches!(
            expand("a@d", &[("a@d", &["a@d"])]),
            Err(ExpandError::Loop(_))
        ));
    }

    #[test]
    fn depth_is_limited() {
        let names: Vec<String> = (0..=MAX_DEPTH).map(|i| format!("a{i}@d")).collect();
        let targets: Vec<[&str; 1]> = (0..MAX_DEPTH).map(|i| [names[i + 1].as_str()]).collect();
        let mut aliases: Vec<(&str, &[&str])> = (0..MAX_DEPTH)
            .map(|i| (names[i].as_str(), &targets[i][..]))
            .collect();
        // Exactly MAX_DEPTH aliases ending at a mailbox is fine.
        let last = [String::from("box@d")];
        let last_ref = [last[0].as_str()];
        aliases.push((names[MAX_DEPTH].as_str(), &last_ref[..]));
        assert!(matches!(
            expand("a0@d", &aliases),
            Err(ExpandError::TooDeep(_))
        ));
        assert!(expand("a1@d", &aliases).is_ok());
    }

    #[test]
    fn fan_out_is_bounded() {
        let targets: Vec<String> = (0..MAX_ADDRESSES + 1)
            .map(|i| format!("box{i}@d"))
            .collect();
        let refs: Vec<&str> = targets.iter().map(String::as_str).collect();
        assert_eq!(
            expand("big@d", &[("big@d", &refs)]),
            Err(ExpandError::TooMany)
        );
    }

    #[test]
    fn dangling_targets_are_reported_and_skipped() {
        let e = expand("a@d", &[("a@d", &["gone@d", "box1@d"])]).unwrap();
        assert_eq!(e.mailboxes, ["box1@d"]);
        assert_eq!(e.dangling, ["gone@d"]);
        let e = expand("nobody@d", &[]).unwrap();
        assert!(e.is_empty() && e.dangling.is_empty());
    }
}
