//! `perf script` output to a flame graph: the stacks folded by inferno's perf collapser (one
//! line per distinct stack, `frame;frame;frame count`), then drawn as an interactive SVG. The
//! root frame of every stack is the thread's name (`shard-0`, `switch-io`, the snapshot
//! builders), so the graph shows at once how the switch's time splits between its threads.
//!
//! A library function rather than a call to inferno's command-line tools: they are not
//! installed on a fresh machine, and this way the version is the one in `Cargo.lock`.

use std::io::{self, BufRead, Write};

use inferno::collapse::perf::{Folder, Options as FoldOptions};
use inferno::collapse::Collapse;
use inferno::flamegraph::{self, Options as GraphOptions};

/// What a rendered graph holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rendered {
    /// Distinct stacks.
    pub stacks: usize,
    /// Sum of the samples' weights: perf's period of each sample, which for the `cpu-clock`
    /// event `benches/profile.sh` records is nanoseconds of CPU.
    pub weight: u64,
}

/// Folds the `perf script` text of `perf_script` and draws it into `svg` under `title`, the
/// weights named `unit` in its tooltips; the folded stacks also go to `folded` when given
/// (they diff well between two runs).
/// A script without a single sample is an error (`InvalidData`): an empty graph would look
/// like a result.
pub fn render(
    perf_script: impl BufRead,
    title: &str,
    unit: &str,
    svg: impl Write,
    folded: Option<&mut dyn Write>,
) -> io::Result<Rendered> {
    let mut stacks = Vec::new();
    Folder::from(FoldOptions::default()).collapse(perf_script, &mut stacks)?;
    let text = String::from_utf8(stacks)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "folded stacks are not UTF-8"))?;
    let mut rendered = Rendered {
        stacks: 0,
        weight: 0,
    };
    for line in text.lines() {
        let count = line
            .rsplit_once(' ')
            .and_then(|(_, n)| n.parse::<u64>().ok());
        if let Some(n) = count {
            rendered.stacks += 1;
            rendered.weight += n;
        }
    }
    if rendered.weight == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no samples with stacks in the perf script (was `perf record` given -g or --call-graph?)",
        ));
    }
    if let Some(out) = folded {
        out.write_all(text.as_bytes())?;
    }
    let mut options = GraphOptions::default();
    options.title = title.to_owned();
    options.count_name = unit.to_owned();
    flamegraph::from_lines(&mut options, text.lines(), svg)?;
    Ok(rendered)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two samples of `perf script` (the format `perf record -g` then `perf script` prints):
    /// thread name, tid, time, event, then the stack innermost first.
    const SCRIPT: &str = "\
shard-0 4242 [000] 100.000001:    1001001 cpu-clock:
\t    55d0a1 hashbrown::map::HashMap<K,V,S,A>::get_mut+0x41 (/bin/switch)
\t    55d0b2 routing::engine::Shard::apply+0x12 (/bin/switch)
\t    55d0c3 switch::shards::Worker::run+0x99 (/bin/switch)

switch-io 4243 [001] 100.000002:    1001001 cpu-clock:
\t    55d0d4 codec::message::Message::decode_partial_into+0x10 (/bin/switch)
\t    55d0e5 switch::connection::Connection::read_batch+0x20 (/bin/switch)

shard-0 4242 [000] 100.000003:    1001001 cpu-clock:
\t    55d0a1 hashbrown::map::HashMap<K,V,S,A>::get_mut+0x41 (/bin/switch)
\t    55d0b2 routing::engine::Shard::apply+0x12 (/bin/switch)
\t    55d0c3 switch::shards::Worker::run+0x99 (/bin/switch)

";

    #[test]
    fn stacks_are_folded_by_thread_and_drawn() {
        let mut svg = Vec::new();
        let mut folded = Vec::new();
        let r = render(
            SCRIPT.as_bytes(),
            "switch test",
            "ns",
            &mut svg,
            Some(&mut folded),
        )
        .unwrap();
        // Weighted by perf's period (1,001,001 ns of cpu-clock each).
        assert_eq!(
            r,
            Rendered {
                stacks: 2,
                weight: 3_003_003
            }
        );
        let folded = String::from_utf8(folded).unwrap();
        assert!(
            folded.contains(
                "shard-0;switch::shards::Worker::run;routing::engine::Shard::apply;hashbrown::map::HashMap<K,V,S,A>::get_mut 2002002"
            ),
            "{folded}"
        );
        assert!(
            folded.contains("switch-io;switch::connection::Connection::read_batch;codec::message::Message::decode_partial_into 1001001"),
            "{folded}"
        );
        let svg = String::from_utf8(svg).unwrap();
        assert!(svg.starts_with("<?xml"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.contains("switch test"));
        // Frame names are escaped into the SVG.
        assert!(svg.contains("hashbrown::map::HashMap&lt;K,V,S,A&gt;::get_mut"));
        assert!(svg.contains("shard-0") && svg.contains("switch-io"));
    }

    #[test]
    fn a_script_without_samples_is_an_error() {
        let mut svg = Vec::new();
        let err = render(&b""[..], "empty", "ns", &mut svg, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(svg.is_empty());
    }
}
