//! Geometry helpers: splitting data at undrawable points and clipping to the frame.
//!
//! plotters does not clip elements to the plotting area, so a line that leaves
//! a fixed axis range would be drawn across the tick labels. Everything is
//! therefore clipped here, in transformed coordinates, before it reaches
//! plotters: polylines with Liang–Barsky, polygons (shaded bands) with
//! Sutherland–Hodgman.

/// A point in transformed coordinates.
pub(crate) type Pt = (f64, f64);

/// The visible rectangle in transformed coordinates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rect {
    pub x0: f64,
    pub x1: f64,
    pub y0: f64,
    pub y1: f64,
}

impl Rect {
    pub fn contains(&self, (x, y): Pt) -> bool {
        let (ex, ey) = (1e-9 * (self.x1 - self.x0), 1e-9 * (self.y1 - self.y0));
        x >= self.x0 - ex && x <= self.x1 + ex && y >= self.y0 - ey && y <= self.y1 + ey
    }
}

/// Splits a sequence into maximal runs of drawable points (`None` breaks a run).
pub(crate) fn runs<T>(points: impl IntoIterator<Item = Option<T>>) -> Vec<Vec<T>> {
    let mut out = vec![Vec::new()];
    for p in points {
        match p {
            Some(p) => out.last_mut().expect("never empty").push(p),
            None if out.last().is_some_and(|r| !r.is_empty()) => out.push(Vec::new()),
            None => {}
        }
    }
    out.retain(|r| !r.is_empty());
    out
}

/// Clips one segment; returns the parameters `(t0, t1)` of its visible part.
fn clip_segment(a: Pt, b: Pt, r: &Rect) -> Option<(f64, f64)> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [
        (-dx, a.0 - r.x0),
        (dx, r.x1 - a.0),
        (-dy, a.1 - r.y0),
        (dy, r.y1 - a.1),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let t = q / p;
            if p < 0.0 {
                t0 = t0.max(t);
            } else {
                t1 = t1.min(t);
            }
        }
    }
    (t0 <= t1).then_some((t0, t1))
}

/// Clips a polyline to `r`; the result may be several pieces.
pub(crate) fn clip_polyline(line: &[Pt], r: &Rect) -> Vec<Vec<Pt>> {
    let mut pieces: Vec<Vec<Pt>> = Vec::new();
    let mut open = false; // does the last piece end at the previous vertex?
    for w in line.windows(2) {
        let (a, b) = (w[0], w[1]);
        let Some((t0, t1)) = clip_segment(a, b, r) else {
            open = false;
            continue;
        };
        let at = |t: f64| (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1));
        if !(open && t0 == 0.0) {
            pieces.push(vec![at(t0)]);
        }
        pieces.last_mut().expect("just pushed").push(at(t1));
        open = t1 == 1.0;
    }
    if line.len() == 1 && r.contains(line[0]) {
        pieces.push(line.to_vec());
    }
    pieces
}

/// Clips a (possibly non-convex) polygon to `r` (Sutherland–Hodgman).
pub(crate) fn clip_polygon(poly: &[Pt], r: &Rect) -> Vec<Pt> {
    type Inside = fn(Pt, &Rect) -> bool;
    type Cross = fn(Pt, Pt, &Rect) -> Pt;
    let edges: [(Inside, Cross); 4] = [
        (
            |p, r| p.0 >= r.x0,
            |a, b, r| (r.x0, a.1 + (b.1 - a.1) * (r.x0 - a.0) / (b.0 - a.0)),
        ),
        (
            |p, r| p.0 <= r.x1,
            |a, b, r| (r.x1, a.1 + (b.1 - a.1) * (r.x1 - a.0) / (b.0 - a.0)),
        ),
        (
            |p, r| p.1 >= r.y0,
            |a, b, r| (a.0 + (b.0 - a.0) * (r.y0 - a.1) / (b.1 - a.1), r.y0),
        ),
        (
            |p, r| p.1 <= r.y1,
            |a, b, r| (a.0 + (b.0 - a.0) * (r.y1 - a.1) / (b.1 - a.1), r.y1),
        ),
    ];
    let mut out = poly.to_vec();
    for (inside, cross) in edges {
        let input = std::mem::take(&mut out);
        for (i, &cur) in input.iter().enumerate() {
            let prev = input[(i + input.len() - 1) % input.len()];
            match (inside(cur, r), inside(prev, r)) {
                (true, true) => out.push(cur),
                (true, false) => {
                    out.push(cross(prev, cur, r));
                    out.push(cur);
                }
                (false, true) => out.push(cross(prev, cur, r)),
                (false, false) => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Rect = Rect {
        x0: 0.0,
        x1: 1.0,
        y0: 0.0,
        y1: 1.0,
    };

    #[test]
    fn runs_split_at_none() {
        let r = runs([Some(1), None, None, Some(2), Some(3), None]);
        assert_eq!(r, vec![vec![1], vec![2, 3]]);
        assert!(runs::<i32>([None, None]).is_empty());
    }

    #[test]
    fn polyline_leaving_and_reentering_gives_two_pieces() {
        let line = [(0.5, 0.5), (0.5, 2.0), (0.8, 0.5), (0.9, 0.5)];
        let pieces = clip_polyline(&line, &R);
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[0], vec![(0.5, 0.5), (0.5, 1.0)]);
        assert_eq!(pieces[1].len(), 3);
        assert!(pieces.iter().flatten().all(|&p| R.contains(p)));
        assert!(clip_polyline(&[(2.0, 2.0), (3.0, 3.0)], &R).is_empty());
    }

    #[test]
    fn polygon_is_cut_to_the_frame() {
        let square = [(-1.0, -1.0), (2.0, -1.0), (2.0, 2.0), (-1.0, 2.0)];
        let clipped = clip_polygon(&square, &R);
        assert!(clipped.iter().all(|&p| R.contains(p)));
        assert_eq!(clipped.len(), 4);
        assert!(clip_polygon(&[(2.0, 2.0), (3.0, 2.0), (3.0, 3.0)], &R).is_empty());
    }
}
