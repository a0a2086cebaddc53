//! A picture of a lab: a small layered layout (switches in a row, each node below the first
//! switch it is on, remote segments above), written as SVG or Graphviz DOT.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::model::{Lab, NodeKind};

/// A placed box.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub id: String,
    pub label: String,
    pub class: &'static str,
    pub x: f64,
    pub y: f64,
}

/// A line between two placed boxes.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub id: String,
    pub from: String,
    pub to: String,
    pub label: String,
    pub class: &'static str,
}

/// The drawing: boxes, lines and the canvas size.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub boxes: Vec<Placed>,
    pub edges: Vec<Edge>,
    pub width: f64,
    pub height: f64,
}

const COL: f64 = 170.0;
const ROW: f64 = 110.0;
const MARGIN: f64 = 90.0;

/// Lays a lab out.
pub fn layout(lab: &Lab) -> Layout {
    // Buses are drawn in the switches' row (their own shape), joined the same way.
    let visible: Vec<(&str, &'static str)> = lab
        .switches
        .iter()
        .filter(|s| !s.hidden)
        .map(|s| (s.name.as_str(), "switch"))
        .chain(lab.buses.iter().map(|b| (b.name.as_str(), "bus")))
        .collect();
    // A hidden hub stands for the node's side of a link: draw the link to the node.
    let hub_link: BTreeMap<&str, &crate::model::Link> = lab
        .links
        .iter()
        .flat_map(|l| [(l.a.switch.as_str(), l), (l.b.switch.as_str(), l)])
        .filter(|(sw, _)| lab.switch(sw).is_some_and(|s| s.hidden))
        .collect();
    let far_switch = |sw: &str| -> String {
        match hub_link.get(sw) {
            Some(l) if l.a.switch == sw => l.b.switch.clone(),
            Some(l) => l.a.switch.clone(),
            None => sw.to_string(),
        }
    };
    // Nodes in columns under the switch each is first on.
    let mut columns: BTreeMap<String, Vec<&crate::model::Node>> = BTreeMap::new();
    for n in &lab.nodes {
        let sw = n
            .net
            .first()
            .map(|a| far_switch(&a.switch))
            .unwrap_or_default();
        columns.entry(sw).or_default().push(n);
    }
    // Each switch is as wide as its column of nodes, at least one.
    let mut boxes = Vec::new();
    let mut x = MARGIN;
    let remotes_above = !lab.remotes.is_empty();
    let sw_y = if remotes_above { MARGIN + ROW } else { MARGIN };
    let mut deepest: f64 = sw_y;
    for (sw, class) in &visible {
        let col = columns.get(*sw).map_or(&[][..], |v| v.as_slice());
        let span = col.len().clamp(1, 3);
        let cx = x + (span as f64 - 1.0) * COL / 2.0;
        boxes.push(Placed {
            id: format!("switch-{sw}"),
            label: sw.to_string(),
            class,
            x: cx,
            y: sw_y,
        });
        for (i, n) in col.iter().enumerate() {
            let y = sw_y + ROW * (1 + i / 3) as f64;
            deepest = deepest.max(y);
            boxes.push(Placed {
                id: format!("node-{}", n.name),
                label: n.name.clone(),
                class: match n.kind {
                    NodeKind::Ns => "node ns",
                    NodeKind::Stack => "node stack",
                    NodeKind::Qemu => "node qemu",
                    NodeKind::Tap => "node tap",
                    NodeKind::Slirp => "node slirp",
                    NodeKind::Router => "node router",
                    NodeKind::Userstack => "node userstack",
                },
                x: x + (i % 3) as f64 * COL,
                y,
            });
        }
        for (i, r) in lab.remotes.iter().filter(|r| r.switch == *sw).enumerate() {
            boxes.push(Placed {
                id: format!("remote-{}", r.name),
                label: format!("{} ({})", r.name, r.vnl),
                class: "remote",
                x: cx + i as f64 * COL,
                y: MARGIN,
            });
        }
        x += span as f64 * COL;
    }
    let mut edges = Vec::new();
    for l in &lab.links {
        let end = |sw: &str, label: &str| -> String {
            if lab.switch(sw).is_some_and(|s| s.hidden) {
                format!("node-{}", label)
            } else {
                format!("switch-{sw}")
            }
        };
        let text: Vec<String> = l
            .impairments
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        edges.push(Edge {
            id: format!("link-{}", l.name),
            from: end(&l.a.switch, &l.a_label),
            to: end(&l.b.switch, &l.b_label),
            label: if text.is_empty() {
                l.name.clone()
            } else {
                format!("{}: {}", l.name, text.join(", "))
            },
            class: "link",
        });
    }
    for n in &lab.nodes {
        for (i, a) in n.net.iter().enumerate() {
            if hub_link.contains_key(a.switch.as_str()) {
                continue;
            }
            edges.push(Edge {
                id: format!("net-{}-{i}", n.name),
                from: format!("switch-{}", a.switch),
                to: format!("node-{}", n.name),
                label: a.port.map(|p| format!("port {p}")).unwrap_or_default(),
                class: "net",
            });
        }
    }
    for r in &lab.remotes {
        edges.push(Edge {
            id: format!("remote-link-{}", r.name),
            from: format!("switch-{}", r.switch),
            to: format!("remote-{}", r.name),
            label: String::new(),
            class: "remote-link",
        });
    }
    Layout {
        boxes,
        edges,
        width: x + MARGIN,
        height: deepest + MARGIN,
    }
}

/// Escapes text for XML.
pub fn xml(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => s.push_str("&amp;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '"' => s.push_str("&quot;"),
            '\'' => s.push_str("&apos;"),
            c => s.push(c),
        }
    }
    s
}

/// The SVG of a lab (ids `switch-NAME`, `node-NAME`, `link-NAME`, for scripts and the web view).
pub fn svg(lab: &Lab) -> String {
    let l = layout(lab);
    let pos: BTreeMap<&str, (f64, f64)> = l
        .boxes
        .iter()
        .map(|b| (b.id.as_str(), (b.x, b.y)))
        .collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#,
        w = l.width,
        h = l.height
    );
    let _ = writeln!(s, "<title>lab {}</title>", xml(&lab.name));
    let _ = writeln!(
        s,
        "<style>.link line{{stroke:#c0392b;stroke-width:3}} .net line,.remote-link line{{stroke:#555;stroke-width:1.5}} .switch rect{{fill:#d6eaf8;stroke:#2471a3}} .node rect{{fill:#e9f7ef;stroke:#1e8449}} .remote rect{{fill:#fdebd0;stroke:#b9770e}} .slirp rect{{fill:#f4ecf7;stroke:#7d3c98}} .router rect{{fill:#fef9e7;stroke:#b7950b;stroke-width:2}} .bus rect{{fill:#e8f8f5;stroke:#117a65;stroke-dasharray:6 3}} text{{text-anchor:middle}} .stat{{fill:#444;font-size:10px}}</style>"
    );
    for e in &l.edges {
        let (Some(a), Some(b)) = (pos.get(e.from.as_str()), pos.get(e.to.as_str())) else {
            continue;
        };
        let (mx, my) = ((a.0 + b.0) / 2.0, (a.1 + b.1) / 2.0);
        let _ = writeln!(
            s,
            r#"<g id="{id}" class="{c}"><line x1="{}" y1="{}" x2="{}" y2="{}"/><text x="{mx}" y="{}">{}</text><text class="stat" x="{mx}" y="{}"></text></g>"#,
            a.0,
            a.1,
            b.0,
            b.1,
            my - 6.0,
            xml(&e.label),
            my + 8.0,
            id = xml(&e.id),
            c = e.class,
        );
    }
    for b in &l.boxes {
        let w = (b.label.chars().count() as f64 * 7.5 + 20.0).max(80.0);
        // A slirp gateway is a pill: the way out of the lab, not a host in it.
        // A router is an ellipse (rx as wide as the box): it joins networks, it is no host.
        let rx = match b.class {
            "node slirp" => 17.0,
            "node router" => w / 2.0,
            _ => 6.0,
        };
        let _ = writeln!(
            s,
            r#"<g id="{id}" class="{c}"><rect x="{}" y="{}" width="{w}" height="34" rx="{rx}"/><text x="{}" y="{}">{}</text><text class="stat" x="{}" y="{}"></text></g>"#,
            b.x - w / 2.0,
            b.y - 17.0,
            b.x,
            b.y + 4.0,
            xml(&b.label),
            b.x,
            b.y + 30.0,
            id = xml(&b.id),
            c = b.class,
        );
    }
    s.push_str("</svg>\n");
    s
}

fn dot_id(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The Graphviz DOT of a lab.
pub fn dot(lab: &Lab) -> String {
    let l = layout(lab);
    let mut s = format!("graph {} {{\n", dot_id(&lab.name));
    for b in &l.boxes {
        let shape = match b.class {
            "switch" => "box",
            "node slirp" => "hexagon, style=filled, fillcolor=\"#f4ecf7\"",
            "node router" => "octagon, style=filled, fillcolor=\"#fef9e7\"",
            "bus" => "box, style=\"dashed,filled\", fillcolor=\"#e8f8f5\"",
            _ => "ellipse",
        };
        let _ = writeln!(
            s,
            "  {} [label={}, shape={shape}];",
            dot_id(&b.id),
            dot_id(&b.label)
        );
    }
    for e in &l.edges {
        let _ = writeln!(
            s,
            "  {} -- {} [label={}];",
            dot_id(&e.from),
            dot_id(&e.to),
            dot_id(&e.label)
        );
    }
    s.push_str("}\n");
    s
}
