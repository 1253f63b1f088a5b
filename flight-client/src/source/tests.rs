use std::io::Write;

use arrow::array::{AsArray, Int64Array, StringArray};
use arrow::datatypes::Int64Type;

use super::*;

fn read_all(path: &Path, options: &ReadOptions) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let consumed = Arc::new(AtomicU64::new(0));
    let source = FileSource::open(path, options, Arc::clone(&consumed))?;
    let schema = source.schema();
    let batches = source.collect::<Result<Vec<_>>>()?;
    Ok((schema, batches))
}

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(content)
        .unwrap();
    path
}

#[test]
fn csv_inference_overrides_and_batch_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("id,name,score\n");
    for i in 0..10 {
        text.push_str(&format!("{i},n{i},{}.5\n", i * 2));
    }
    let path = write(dir.path(), "a.csv", text.as_bytes());
    let options = ReadOptions {
        batch_rows: 4,
        overrides: vec![("id".into(), DataType::Int16)],
        ..Default::default()
    };
    let (schema, batches) = read_all(&path, &options).unwrap();
    assert_eq!(schema.field(0).data_type(), &DataType::Int16);
    assert_eq!(schema.field(1).data_type(), &DataType::Utf8);
    assert_eq!(schema.field(2).data_type(), &DataType::Float64);
    let sizes: Vec<usize> = batches.iter().map(RecordBatch::num_rows).collect();
    assert_eq!(sizes, vec![4, 4, 2]);
    let names = batches[2].column(1).as_string::<i32>();
    assert_eq!(names.value(1), "n9");
}

#[test]
fn unknown_override_names_the_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "a.csv", b"a,b\n1,2\n");
    let options = ReadOptions {
        overrides: vec![("c".into(), DataType::Int64)],
        ..Default::default()
    };
    let e = read_all(&path, &options).unwrap_err().to_string();
    assert!(e.contains("\"c\"") && e.contains("a, b"), "{e}");
}

#[test]
fn json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "a.jsonl",
        b"{\"x\": 1, \"s\": \"a\"}\n{\"x\": 2, \"s\": null}\n{\"x\": 3}\n",
    );
    let (schema, batches) = read_all(&path, &ReadOptions::default()).unwrap();
    assert_eq!(
        schema.field_with_name("x").unwrap().data_type(),
        &DataType::Int64
    );
    // The file's key order, not arrow's alphabetical one.
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, vec!["x", "s"]);
    let xs = batches[0]
        .column_by_name("x")
        .unwrap()
        .as_primitive::<Int64Type>();
    assert_eq!(xs.values().to_vec(), vec![1, 2, 3]);
}

fn sample() -> RecordBatch {
    RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from_iter_values(0..100)) as _),
        (
            "v",
            Arc::new(StringArray::from_iter_values(
                (0..100).map(|i| i.to_string()),
            )) as _,
        ),
    ])
    .unwrap()
}

#[test]
fn parquet_with_cast_override() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.parquet");
    let batch = sample();
    let file = std::fs::File::create(&path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let options = ReadOptions {
        batch_rows: 30,
        overrides: vec![("v".into(), DataType::Int32)],
        ..Default::default()
    };
    let (schema, batches) = read_all(&path, &options).unwrap();
    assert_eq!(schema.field(1).data_type(), &DataType::Int32);
    assert_eq!(
        batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
        100
    );
    assert!(batches.iter().all(|b| b.num_rows() <= 30));
}

#[test]
fn ipc_file_and_stream_formats() {
    let dir = tempfile::tempdir().unwrap();
    let batch = sample();
    let file_path = dir.path().join("a.arrow");
    let mut w = arrow::ipc::writer::FileWriter::try_new(
        std::fs::File::create(&file_path).unwrap(),
        &batch.schema(),
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    let stream_path = dir.path().join("b.arrows");
    let mut w = arrow::ipc::writer::StreamWriter::try_new(
        std::fs::File::create(&stream_path).unwrap(),
        &batch.schema(),
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    let (_, a) = read_all(&file_path, &ReadOptions::default()).unwrap();
    assert_eq!(a, vec![batch.clone()]);
    let (_, b) = read_all(&stream_path, &ReadOptions::default()).unwrap();
    assert_eq!(b, vec![batch.clone(), batch]);
}

#[test]
fn bad_files_are_decode_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "bad.parquet", b"this is not parquet");
    let e = read_all(&path, &ReadOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Decode { .. }), "{e}");
    let e = read_all(&dir.path().join("missing.csv"), &ReadOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    let e = read_all(&dir.path().join("x.unknown"), &ReadOptions::default()).unwrap_err();
    assert!(e.to_string().contains("--format"), "{e}");
}
