//! Where a field is in the YAML text, by its path (`routes[2].match.methods`).
//! Only an error needs it, so the text is read again then rather than every
//! parsed value carrying its position.

use serde_saphyr::granit_parser::{Event, Parser, Span};

/// One step of a field path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// `routes[2].match.methods[0]` as steps; a key is everything between dots
/// and brackets.
pub fn steps(path: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    for part in path.split('.').filter(|part| !part.is_empty()) {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            if open > 0 {
                steps.push(Step::Key(rest[..open].to_string()));
            }
            rest = &rest[open..];
            while let Some(index) = rest
                .strip_prefix('[')
                .and_then(|inner| inner.split_once(']'))
            {
                if let Ok(i) = index.0.parse() {
                    steps.push(Step::Index(i));
                }
                rest = index.1;
            }
        } else {
            steps.push(Step::Key(rest.to_string()));
        }
    }
    steps
}

/// What is at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// 1-based line and column of the field: its key, or the element itself
    /// in a sequence.
    pub position: (u64, u64),
    /// The node there in words: a scalar's text quoted, or "a list" / "a map".
    pub value: String,
}

/// The node at `path` in `text`, when the text parses that far and has it.
pub fn locate(text: &str, path: &[Step]) -> Option<Found> {
    // Only the nodes: stream and document markers, anchors and comments
    // are no step of a path.
    let mut events = Parser::new_from_str(text)
        .map_while(Result::ok)
        .filter(|(event, _)| {
            matches!(
                event,
                Event::Scalar(..)
                    | Event::Alias(..)
                    | Event::SequenceStart(..)
                    | Event::SequenceEnd
                    | Event::MappingStart(..)
                    | Event::MappingEnd
            )
        });
    let (mut event, mut at) = events.next()?;
    for step in path {
        match (step, event) {
            (Step::Key(key), Event::MappingStart(..)) => loop {
                let (name, name_span) = events.next()?;
                match name {
                    Event::Scalar(name, ..) if name == key.as_str() => {
                        at = name_span;
                        event = events.next()?.0;
                        break;
                    }
                    Event::MappingEnd => return None,
                    other => {
                        skip(other, &mut events)?;
                        let (value, _) = events.next()?;
                        skip(value, &mut events)?;
                    }
                }
            },
            (Step::Index(index), Event::SequenceStart(..)) => {
                for _ in 0..*index {
                    let (element, _) = events.next()?;
                    if matches!(element, Event::SequenceEnd) {
                        return None;
                    }
                    skip(element, &mut events)?;
                }
                (event, at) = events.next()?;
                if matches!(event, Event::SequenceEnd) {
                    return None;
                }
            }
            _ => return None,
        }
    }
    let value = match event {
        Event::Scalar(text, ..) => format!("{:?}", text.as_ref()),
        Event::SequenceStart(..) => "a list".into(),
        Event::MappingStart(..) => "a map".into(),
        _ => "an alias".into(),
    };
    let start = at.start;
    Some(Found {
        position: (start.line() as u64, start.col() as u64 + 1),
        value,
    })
}

/// Consumes the rest of the node `first` opens.
fn skip<'a>(first: Event<'a>, events: &mut impl Iterator<Item = (Event<'a>, Span)>) -> Option<()> {
    let mut depth = match first {
        Event::SequenceStart(..) | Event::MappingStart(..) => 1usize,
        _ => return Some(()),
    };
    while depth > 0 {
        match events.next()?.0 {
            Event::SequenceStart(..) | Event::MappingStart(..) => depth += 1,
            Event::SequenceEnd | Event::MappingEnd => depth -= 1,
            _ => {}
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "issuers: []\nroutes:\n  - name: a\n  - name: b\n    match: { path_prefix: /b, methods: [GET, \"PO ST\"] }\n    upstream:\n      addrs:\n        - 127.0.0.1:1\n";

    fn at(path: &str) -> Option<Found> {
        locate(TEXT, &steps(path))
    }

    #[test]
    fn a_path_is_found_at_its_key_or_element() {
        let found = at("routes[1].match.methods[1]").unwrap();
        assert_eq!(found.position, (5, 46));
        assert_eq!(found.value, "\"PO ST\"");
        assert_eq!(at("routes[1].match").unwrap().position, (5, 5));
        assert_eq!(at("routes[1].match").unwrap().value, "a map");
        assert_eq!(at("routes[1].upstream.addrs").unwrap().value, "a list");
        assert_eq!(at("routes[1].upstream.addrs[0]").unwrap().position, (8, 11));
        assert_eq!(at("routes[1].name").unwrap().position, (4, 5));
        assert_eq!(at("issuers").unwrap().position, (1, 1));
    }

    #[test]
    fn what_is_not_there_is_not_found() {
        assert_eq!(at("routes[2]"), None);
        assert_eq!(at("routes[1].auth"), None);
        assert_eq!(at("routes.name"), None);
        assert_eq!(locate("a: [", &steps("a[0]")), None);
    }

    #[test]
    fn paths_are_split_into_keys_and_indices() {
        assert_eq!(
            steps("routes[2].match.methods[0]"),
            [
                Step::Key("routes".into()),
                Step::Index(2),
                Step::Key("match".into()),
                Step::Key("methods".into()),
                Step::Index(0),
            ]
        );
        assert_eq!(steps("[3][4]"), [Step::Index(3), Step::Index(4)]);
    }
}
