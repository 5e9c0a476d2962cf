package experiment

import (
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// WriteMarkdown prints every table of r.
func WriteMarkdown(w io.Writer, r *Result) error {
	if r.Title != "" {
		if _, err := fmt.Fprintf(w, "## %s\n\n", r.Title); err != nil {
			return err
		}
	}
	if r.Machine != "" {
		if _, err := fmt.Fprintf(w, "Machine: %s. Run took %s.\n\n", r.Machine, FormatDuration(r.Elapsed)); err != nil {
			return err
		}
	}
	for i := range r.Tables {
		if err := r.Tables[i].Markdown(w); err != nil {
			return err
		}
	}
	return nil
}

// WriteFiles writes NAME.md, NAME.json and every plot's PNG under dir.
func WriteFiles(dir string, r *Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("experiment: create output directory: %w", err)
	}
	md, err := os.Create(filepath.Join(dir, r.Name+".md"))
	if err != nil {
		return fmt.Errorf("experiment: %w", err)
	}
	if err := WriteMarkdown(md, r); err != nil {
		md.Close()
		return fmt.Errorf("experiment: write markdown: %w", err)
	}
	if err := md.Close(); err != nil {
		return fmt.Errorf("experiment: %w", err)
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("experiment: encode json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, r.Name+".json"), js, 0o644); err != nil {
		return fmt.Errorf("experiment: %w", err)
	}
	for _, p := range r.Plots {
		if err := WritePNG(filepath.Join(dir, p.File), p); err != nil {
			return err
		}
	}
	return nil
}

// WritePNG renders one plot as a PNG file.
func WritePNG(path string, p Plot) error {
	pl := plot.New()
	pl.Title.Text = p.Title
	pl.X.Label.Text = p.XLabel
	pl.Y.Label.Text = p.YLabel
	pl.Add(plotter.NewGrid())
	if p.LogX {
		pl.X.Scale = plot.LogScale{}
		pl.X.Tick.Marker = plot.LogTicks{Prec: 2}
	}
	if p.LogY {
		pl.Y.Scale = plot.LogScale{}
		pl.Y.Tick.Marker = plot.LogTicks{Prec: 2}
	}
	for i, s := range p.Series {
		xy := make(plotter.XYs, 0, len(s.X))
		for j := range s.X {
			if j >= len(s.Y) {
				break
			}
			x, y := s.X[j], s.Y[j]
			if math.IsNaN(x) || math.IsNaN(y) || math.IsInf(x, 0) || math.IsInf(y, 0) {
				continue
			}
			if (p.LogX && x <= 0) || (p.LogY && y <= 0) {
				continue // a log axis cannot show it
			}
			xy = append(xy, plotter.XY{X: x, Y: y})
		}
		if len(xy) == 0 {
			continue
		}
		c := plotutil.Color(i)
		if s.Points {
			sc, err := plotter.NewScatter(xy)
			if err != nil {
				return fmt.Errorf("experiment: plot %s: %w", p.File, err)
			}
			sc.GlyphStyle.Color = c
			sc.GlyphStyle.Shape = plotutil.Shape(i)
			pl.Add(sc)
			pl.Legend.Add(s.Name, sc)
			continue
		}
		ln, pts, err := plotter.NewLinePoints(xy)
		if err != nil {
			return fmt.Errorf("experiment: plot %s: %w", p.File, err)
		}
		ln.Color = c
		ln.Width = vg.Points(1.5)
		pts.Color = c
		pts.Shape = plotutil.Shape(i)
		pl.Add(ln, pts)
		pl.Legend.Add(s.Name, ln, pts)
	}
	switch p.Legend {
	case "top-left":
		pl.Legend.Top, pl.Legend.Left = true, true
	case "bottom-left":
		pl.Legend.Left = true
	case "bottom-right":
	default:
		pl.Legend.Top = true
	}
	if p.YMin != 0 {
		pl.Y.Min = p.YMin
	}
	if p.YMax != 0 {
		pl.Y.Max = p.YMax
	}
	pl.BackgroundColor = color.White
	if err := pl.Save(7*vg.Inch, 4.5*vg.Inch, path); err != nil {
		return fmt.Errorf("experiment: save plot %s: %w", path, err)
	}
	return nil
}
