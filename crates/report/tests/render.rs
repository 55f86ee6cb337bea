//! End-to-end checks of rendered figures: PNG bytes decode to the requested
//! size and are not blank, SVG text contains titles, labels and one path per
//! series, awkward data (NaN, ±inf, empty, all-equal, 1e-3..1e3 on log axes)
//! renders without panicking, and bad input or unwritable paths are errors.

use std::path::PathBuf;

use w2sg_report::{
    Axis, Figure, HeatMap, Legend, LineSeries, Panel, Plot, RefLine, Report, Rgb, ScatterSeries,
    Section,
};

const RED: Rgb = Rgb(0xAA, 0x11, 0x11);
const GREEN: Rgb = Rgb(0x11, 0xAA, 0x11);
const BLUE: Rgb = Rgb(0x11, 0x11, 0xAA);

fn decode(png: &[u8]) -> image::RgbImage {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .expect("PNG decodes")
        .to_rgb8()
}

fn distinct_colors(img: &image::RgbImage) -> usize {
    let mut seen = std::collections::HashSet::new();
    for p in img.pixels() {
        seen.insert(p.0);
    }
    seen.len()
}

/// The `points` attribute of every `<polyline>` stroked with `color`, as pixel pairs.
fn polylines(svg: &str, color: Rgb) -> Vec<Vec<(f64, f64)>> {
    let stroke = format!("stroke=\"{}\"", color.to_hex());
    svg.split("<polyline")
        .skip(1)
        .map(|el| &el[..el.find("/>").unwrap_or(el.len())])
        .filter(|el| el.contains(&stroke))
        .map(|el| {
            let pts = el.split("points=\"").nth(1).unwrap_or("");
            let pts = &pts[..pts.find('"').unwrap_or(0)];
            pts.split_whitespace()
                .filter_map(|xy| {
                    let (x, y) = xy.split_once(',')?;
                    Some((x.parse().ok()?, y.parse().ok()?))
                })
                .collect()
        })
        .collect()
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("w2sg-report-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn three_lines() -> Plot {
    let xs: Vec<f64> = (0..20).map(|i| i as f64).collect();
    let f = |k: f64| xs.iter().map(|x| (x * k).sin()).collect::<Vec<_>>();
    Plot::new("Three sines")
        .x_axis(Axis::new("time step"))
        .y_axis(Axis::new("amplitude"))
        .line(LineSeries::from_xy("a", &xs, &f(0.1)).color(RED))
        .line(LineSeries::from_xy("b", &xs, &f(0.2)).color(GREEN).dashed())
        .line(LineSeries::from_xy("c", &xs, &f(0.3)).color(BLUE))
        .legend(Legend::Hidden)
}

#[test]
fn png_has_requested_size_and_is_not_one_colour() {
    let png = Figure::from(three_lines())
        .size(640, 480)
        .to_png_bytes()
        .unwrap();
    let img = decode(&png);
    assert_eq!(img.dimensions(), (640, 480));
    assert!(distinct_colors(&img) > 10, "image looks blank");
}

#[test]
fn png_title_text_is_rasterised_with_the_bundled_font() {
    let top_dark_pixels = |title: &str| {
        let png = Figure::from(Plot::new(title)).to_png_bytes().unwrap();
        let img = decode(&png);
        (0..img.width())
            .flat_map(|x| (0..25).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&c| c < 100))
            .count()
    };
    // A blank title reserves the same space but has no ink.
    assert_eq!(top_dark_pixels(" "), 0);
    assert!(top_dark_pixels("A title with ink") > 50);
}

#[test]
fn svg_has_title_axis_labels_and_a_path_per_series() {
    let svg = Figure::from(three_lines()).to_svg_string().unwrap();
    assert!(svg.starts_with("<svg"));
    for text in ["Three sines", "time step", "amplitude"] {
        assert!(svg.contains(text), "missing {text:?}");
    }
    assert_eq!(polylines(&svg, RED).len(), 1, "one polyline for series a");
    assert_eq!(polylines(&svg, RED)[0].len(), 20);
    assert_eq!(polylines(&svg, BLUE).len(), 1, "one polyline for series c");
    // The dashed series is drawn as dashes.
    let dashes = svg
        .matches(&format!("stroke=\"{}\"", GREEN.to_hex()))
        .count();
    assert!(dashes > 3, "dashed series b drawn with {dashes} strokes");
}

#[test]
fn legend_lists_every_labelled_series() {
    let svg = Figure::from(
        three_lines()
            .legend(Legend::UpperLeft)
            .hline(RefLine::new("ref", 0.5)),
    )
    .to_svg_string()
    .unwrap();
    for label in [">\na\n<", ">\nb\n<", ">\nc\n<", ">\nref\n<"] {
        assert!(svg.contains(label), "legend text {label:?} missing");
    }
}

#[test]
fn log_axes_spanning_six_decades_render_with_decade_ticks() {
    let xs: Vec<f64> = (0..=60)
        .map(|k| 10f64.powf(-3.0 + 0.1 * k as f64))
        .collect();
    let plot = Plot::new("log-log")
        .x_axis(Axis::new("x").log())
        .y_axis(Axis::new("y").log())
        .line(LineSeries::from_xy("identity", &xs, &xs));
    let fig = Figure::from(plot);
    let svg = fig.to_svg_string().unwrap();
    for tick in ["10⁻³", "10⁻²", "10⁻¹", "10⁰", "10¹", "10²", "10³"] {
        assert!(svg.contains(tick), "missing tick {tick}");
    }
    assert!(distinct_colors(&decode(&fig.to_png_bytes().unwrap())) > 10);
}

#[test]
fn nan_and_infinite_points_are_skipped_and_break_the_line() {
    let pts = vec![
        (1.0, 1.0),
        (2.0, 2.0),
        (3.0, f64::NAN),
        (4.0, 3.0),
        (f64::INFINITY, 1.0),
        (5.0, 2.0),
        (6.0, 1.0),
    ];
    let plot = Plot::new("gaps")
        .line(LineSeries::new("with gaps", pts.clone()).color(RED))
        .scatter(ScatterSeries::new("points", pts))
        .legend(Legend::Hidden);
    let fig = Figure::from(plot);
    let svg = fig.to_svg_string().unwrap();
    let pieces = polylines(&svg, RED);
    assert_eq!(pieces.len(), 2, "{pieces:?}"); // (1,2) and (5,6); (4) alone is a point
    assert!(fig.to_png_bytes().is_ok());
    // Non-positive values on a log axis are skipped the same way.
    let log = Plot::new("log")
        .y_axis(Axis::new("y").log())
        .line(LineSeries::new(
            "l",
            [(0.0, -1.0), (1.0, 0.0), (2.0, 1.0), (3.0, 10.0)],
        ));
    assert!(Figure::from(log).to_png_bytes().is_ok());
}

#[test]
fn fixed_ranges_clip_data_to_the_plot() {
    let plot = Plot::new("clipped")
        .x_axis(Axis::new("x").range(0.0, 1.0))
        .y_axis(Axis::new("y").range(0.0, 1.0))
        .line(LineSeries::new("steep", [(-5.0, -5.0), (0.5, 0.5), (10.0, 1e6)]).color(RED))
        .line(
            LineSeries::new("banded", [(0.0, 0.5), (1.0, 0.5)])
                .color(BLUE)
                .band([-10.0, -10.0], [10.0, 10.0]),
        )
        .legend(Legend::Hidden);
    let fig = Figure::from(plot).size(400, 300);
    let svg = fig.to_svg_string().unwrap();
    let pieces = polylines(&svg, RED);
    assert_eq!(pieces.len(), 1);
    for &(x, y) in &pieces[0] {
        assert!(
            (0.0..=400.0).contains(&x) && (0.0..=300.0).contains(&y),
            "{x},{y}"
        );
    }
}

#[test]
fn empty_and_degenerate_data_render_instead_of_panicking() {
    let empty_series = Plot::new("empty").line(LineSeries::new("nothing", []));
    let svg = Figure::from(empty_series).to_svg_string().unwrap();
    assert!(svg.contains("no data"));
    assert!(Figure::from(Plot::new("no series")).to_png_bytes().is_ok());
    let all_nan = Plot::new("nan").line(LineSeries::new("n", [(f64::NAN, f64::NAN)]));
    assert!(Figure::from(all_nan).to_png_bytes().is_ok());
    let constant = Plot::new("constant")
        .line(LineSeries::new("c", [(1.0, 3.0), (1.0, 3.0)]))
        .scatter(ScatterSeries::new("s", [(1.0, 3.0)]));
    assert!(Figure::from(constant).to_png_bytes().is_ok());
    let one_point_band =
        Plot::new("one point").line(LineSeries::new("p", [(1.0, 1.0)]).band([0.5], [1.5]));
    assert!(Figure::from(one_point_band).to_svg_string().is_ok());
}

#[test]
fn heat_map_with_nans_renders_grey_cells_and_a_colour_bar() {
    let xs = [1.0, 10.0, 100.0, 1000.0];
    let ys = [0.0, 0.5, 1.0];
    let map = HeatMap::from_fn("with holes", &xs, &ys, |x, y| {
        if x == 10.0 && y == 0.5 {
            f64::NAN
        } else {
            x.log10() + y
        }
    })
    .x_axis(Axis::new("n").log())
    .color_axis(Axis::new("risk colour"))
    .line(LineSeries::new("threshold", [(1.0, 0.0), (1000.0, 1.0)]));
    let fig = Figure::from(map);
    let svg = fig.to_svg_string().unwrap();
    assert!(svg.contains("#BDBDBD"), "NaN cell drawn grey");
    assert!(svg.contains("risk colour"), "colour bar label");
    assert!(svg.contains("threshold"));
    let img = decode(&fig.to_png_bytes().unwrap());
    assert!(distinct_colors(&img) > 50);

    let all_nan = HeatMap::new("all NaN", &[1.0, 2.0], &[1.0], vec![vec![f64::NAN; 2]]);
    assert!(Figure::from(all_nan).to_png_bytes().is_ok());
    let log_z = HeatMap::new("log z", &[1.0, 2.0], &[1.0], vec![vec![1e-3, 1e3]])
        .color_axis(Axis::new("z").log());
    assert!(Figure::from(log_z).to_svg_string().unwrap().contains("10³"));
}

#[test]
fn inconsistent_input_is_an_error_naming_the_problem() {
    let bad = Plot::new("bad").line(LineSeries::from_xy("short", &[1.0, 2.0], &[1.0]));
    let err = Figure::from(bad).to_png_bytes().unwrap_err().to_string();
    assert!(err.contains("short") && err.contains("2 x values"), "{err}");

    let bad_band =
        Plot::new("bad").line(LineSeries::new("b", [(1.0, 1.0)]).band([0.0, 1.0], [2.0]));
    assert!(Figure::from(bad_band).to_svg_string().is_err());

    let bad_range = Plot::new("bad").x_axis(Axis::new("x").log().range(0.0, 10.0));
    let err = Figure::from(bad_range)
        .to_svg_string()
        .unwrap_err()
        .to_string();
    assert!(err.contains("log"), "{err}");

    let bad_map = HeatMap::new("m", &[1.0, 2.0], &[1.0, 2.0], vec![vec![1.0, 2.0]]);
    assert!(Figure::from(bad_map).to_png_bytes().is_err());

    let crowded = Figure::grid(1, 1, vec![Plot::new("a").into(), Plot::new("b").into()]);
    assert!(crowded.to_svg_string().is_err());
}

#[test]
fn multi_panel_figure_renders_all_panels() {
    let map = HeatMap::from_fn("map", &[1.0, 2.0, 3.0], &[1.0, 2.0], |x, y| x * y);
    let fig = Figure::grid(
        2,
        2,
        vec![
            Panel::from(Plot::new("first panel")),
            Panel::from(map),
            Panel::Empty,
            Panel::from(three_lines()),
        ],
    )
    .title("overall");
    let svg = fig.to_svg_string().unwrap();
    for title in ["overall", "first panel", "map", "Three sines"] {
        assert!(svg.contains(title), "missing {title}");
    }
    let img = decode(&fig.to_png_bytes().unwrap());
    assert_eq!(img.dimensions(), fig.dimensions());
}

#[test]
fn save_writes_png_and_svg() {
    let dir = scratch_dir("save");
    let saved = Figure::from(three_lines()).save(&dir, "sines").unwrap();
    assert_eq!(saved.png, dir.join("sines.png"));
    let png = std::fs::read(&saved.png).unwrap();
    assert_eq!(decode(&png).dimensions(), (800, 560));
    assert!(std::fs::read_to_string(&saved.svg)
        .unwrap()
        .contains("Three sines"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn save_into_a_missing_or_unwritable_folder_is_an_error_with_the_path() {
    let base = scratch_dir("missing");
    let nested = base.join("does/not/exist");
    let err = Figure::from(three_lines()).save(&nested, "x").unwrap_err();
    assert!(
        err.to_string().contains(&*nested.to_string_lossy()),
        "{err}"
    );

    // A "folder" that is a regular file cannot be written into, even as root.
    let file = base.join("plain-file");
    std::fs::write(&file, b"not a folder").unwrap();
    let err = Figure::from(three_lines()).save(&file, "x").unwrap_err();
    assert!(err.to_string().contains("plain-file"), "{err}");

    // An existing folder where the output file should go.
    std::fs::create_dir_all(base.join("taken.png")).unwrap();
    let err = Figure::from(three_lines())
        .save(&base, "taken")
        .unwrap_err();
    assert!(err.to_string().contains("taken.png"), "{err}");

    assert!(Figure::from(three_lines())
        .save(&base, "../escape")
        .is_err());
    let err = Report::new("r").save(nested.join("r.html")).unwrap_err();
    assert!(err.to_string().contains("r.html"), "{err}");
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn html_report_escapes_text_and_is_self_contained() {
    let evil = "<script>alert('x')</script>";
    let fig = Figure::from(Plot::new(evil).line(LineSeries::new(evil, [(0.0, 0.0), (1.0, 1.0)])));
    let html = Report::new(evil)
        .section(
            Section::new(evil)
                .paragraph(evil)
                .pre(evil)
                .table([evil], vec![vec![evil.to_string()]])
                .figure(&fig, evil)
                .unwrap()
                .figure_png(&fig, evil)
                .unwrap(),
        )
        .to_html();
    assert!(!html.contains("<script"), "unescaped script tag");
    assert!(html.contains("&lt;script&gt;"));
    assert!(html.contains("<svg"), "inline SVG");
    assert!(
        html.contains("data:image/png;base64,iVBORw0KGgo"),
        "embedded PNG"
    );
    // The SVG namespace is an identifier, not a resource; nothing else may be a URL.
    let rest = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(
        !rest.contains("http://") && !rest.contains("https://"),
        "external resource"
    );
}

#[test]
fn tiny_panels_do_not_panic() {
    let map = HeatMap::from_fn("map", &[1.0, 2.0], &[1.0, 2.0], |x, y| x * y)
        .color_axis(Axis::new("a long colour bar label"));
    let panels = vec![
        Panel::from(map.clone()),
        Panel::from(three_lines().legend(Legend::UpperRight)),
        Panel::from(map),
        Panel::from(three_lines()),
    ];
    let fig = Figure::grid(2, 2, panels).size(100, 100).title("tiny");
    // Whatever plotters makes of it, the answer is an image or an error, not a panic.
    let _ = fig.to_png_bytes();
    let _ = fig.to_svg_string();
}
