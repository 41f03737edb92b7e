//! Decoding throughput of `tidings_wire::Decoder` against `sse-codec`, `eventsource-stream`
//! and a `memchr`-only scan for line ends, on the three corpora of [`corpus`], fed in
//! 16 KiB chunks.
//!
//! `cargo bench -p tidings-wire --bench decode`

mod contenders;
mod corpus;
mod cpu_time;

use std::{hint::black_box, time::Duration};

use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput, measurement::Measurement};

use contenders::{DECODERS, memchr_only};
use corpus::{CORPUS_SIZE, Corpus, Kind};

fn bench_corpus<M: Measurement>(criterion: &mut Criterion<M>, clock: &str, kind: Kind) {
    let corpus = Corpus::generate(kind, CORPUS_SIZE);
    let chunks = corpus.chunks();
    println!(
        "corpus {}: {} bytes, {} events, {} chunks",
        kind.name(),
        corpus.bytes.len(),
        corpus.events,
        chunks.len()
    );
    // Every contender must do the whole job, or its figure means nothing.
    for (name, decode) in DECODERS {
        assert_eq!(decode(&chunks), corpus.events, "{name} on {}", kind.name());
    }
    assert_eq!(memchr_only(&chunks), corpus.line_end_bytes);

    let mut group = criterion.benchmark_group(format!("decode-{}{clock}", kind.name()));
    group.throughput(Throughput::Bytes(corpus.bytes.len() as u64));
    // One iteration decodes 32 MiB: tens of milliseconds at least, so a fixed iteration
    // count per sample is the right sampling.
    group.sampling_mode(SamplingMode::Flat);
    for (name, decode) in DECODERS
        .into_iter()
        .chain([("memchr", memchr_only as fn(&[Bytes]) -> usize)])
    {
        group.bench_function(name, |b| b.iter(|| decode(black_box(&chunks))));
    }
    group.finish();
}

/// Runs every corpus with `criterion`; `clock` tells the group names apart.
fn run<M: Measurement>(criterion: Criterion<M>, clock: &str) {
    let mut criterion = criterion
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    for kind in Kind::ALL {
        bench_corpus(&mut criterion, clock, kind);
    }
    criterion.final_summary();
}

fn main() {
    if cpu_time::requested() {
        run(
            Criterion::default().with_measurement(cpu_time::CpuTime),
            "-cpu",
        );
    } else {
        run(Criterion::default(), "");
    }
}
