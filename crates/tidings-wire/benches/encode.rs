//! Encoding throughput of `tidings_wire::EventBuilder` on the events of the `large` and
//! `small` corpora: into one reused buffer (`build_into`) and one `Bytes` per event
//! (`build`). Throughput counts the encoded bytes.
//!
//! `cargo bench -p tidings-wire --bench encode`

mod corpus;
mod cpu_time;

use std::{hint::black_box, time::Duration};

use bytes::BytesMut;
use criterion::{Criterion, SamplingMode, Throughput, measurement::Measurement};
use tidings_wire::EventBuilder;

use corpus::{CORPUS_SIZE, Fields, Kind, all_fields};

fn builder(fields: &Fields) -> EventBuilder<'_> {
    let mut builder = EventBuilder::new().data(&fields.data);
    if let Some(id) = &fields.id {
        builder = builder.id(id);
    }
    if let Some(event_type) = &fields.event_type {
        builder = builder.event(event_type);
    }
    builder
}

fn build_into(events: &[Fields], buf: &mut BytesMut) -> usize {
    buf.clear();
    for fields in events {
        builder(fields).build_into(buf);
    }
    black_box(&buf[..]).len()
}

fn build_each(events: &[Fields]) -> usize {
    events
        .iter()
        .map(|fields| black_box(builder(fields).build()).len())
        .sum()
}

fn bench_corpus<M: Measurement>(criterion: &mut Criterion<M>, clock: &str, kind: Kind) {
    let events = all_fields(kind, CORPUS_SIZE);
    let mut buf = BytesMut::new();
    let encoded = build_into(&events, &mut buf);
    assert_eq!(build_each(&events), encoded);
    println!(
        "encode {}: {} events, {encoded} bytes",
        kind.name(),
        events.len()
    );

    let mut group = criterion.benchmark_group(format!("encode-{}{clock}", kind.name()));
    group.throughput(Throughput::Bytes(encoded as u64));
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("build_into", |b| {
        b.iter(|| build_into(black_box(&events), &mut buf))
    });
    group.bench_function("build", |b| b.iter(|| build_each(black_box(&events))));
    group.finish();
}

/// Runs every corpus with `criterion`; `clock` tells the group names apart.
fn run<M: Measurement>(criterion: Criterion<M>, clock: &str) {
    let mut criterion = criterion
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    for kind in [Kind::Large, Kind::Small] {
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
