//go:build js && wasm

package main

// Seed 002 (self-verified e-commerce) in the browser: the CLI phone's own
// code (selfverify.User: ECQV registration, withdrawing, paying a vendor
// under K_UV and the hash chain, answering deposit confirmations) runs here
// unchanged; only its transport and its storage are the browser's. Requests
// go out through a fetch function the page passes in (svInit), and every
// change of the wallet (d_U, the token keys t, K_UN, the chain keys) is
// handed to a save function the page passes in, which seals it with a
// non-extractable AES-GCM key and stores it in IndexedDB before the next
// message leaves (the User saves before it sends, so no chain key is used
// twice). Nothing of the wallet leaves the device: the operator sees what
// the CLI phone sends it, a vendor never sees the user's identity.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall/js"
	"time"

	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/selfverify"
)

// shop is the wallet's self-verified user: the page's transport and
// storage, and the User once registered.
type shop struct {
	mu     sync.Mutex
	origin string   // the operator's origin (the platform serving the page)
	fetch  js.Value // (url, method, headers object, body) → Promise<{status, contentType, body}>
	save   js.Value // (wallet JSON) → Promise (sealed and stored)
	user   *selfverify.User
}

func (s *shop) register(api js.Value) {
	api.Set("svInit", js.FuncOf(s.init))
	api.Set("svRegister", js.FuncOf(s.registerUser))
	api.Set("svStatus", js.FuncOf(s.status))
	api.Set("svWithdraw", js.FuncOf(s.withdraw))
	api.Set("svVendor", js.FuncOf(s.vendor))
	api.Set("svPay", js.FuncOf(s.pay))
	api.Set("svConfirm", js.FuncOf(s.confirm))
}

// init(origin, fetch, save, walletJSON | "") → {registered, id} | {error}.
// walletJSON is the wallet the page unsealed from IndexedDB.
func (s *shop) init(_ js.Value, args []js.Value) any {
	if len(args) != 4 || args[1].Type() != js.TypeFunction || args[2].Type() != js.TypeFunction {
		return errorObj("svInit needs the origin, a fetch and a save function, and the saved wallet")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.origin, s.fetch, s.save, s.user = args[0].String(), args[1], args[2], nil
	saved := args[3].String()
	if saved == "" {
		return map[string]any{"registered": false}
	}
	w, err := selfverify.ParseWallet([]byte(saved))
	if err != nil {
		return errorObj("The shopping keys saved on this phone are damaged. Set up shopping again.")
	}
	api, err := s.operator()
	if err != nil {
		return errorObj("This page cannot reach its server.")
	}
	u, err := selfverify.OpenUser(w, api, selfverify.WithSave(s.persist))
	if err != nil {
		return errorObj("The shopping keys saved on this phone are damaged. Set up shopping again.")
	}
	s.user = u
	return map[string]any{"registered": true, "id": u.ID()}
}

// persist hands the wallet to the page to seal and store; it returns once
// it is stored (or failed).
func (s *shop) persist(w *selfverify.Wallet) error {
	b, err := json.Marshal(w)
	if err != nil {
		return err
	}
	_, err = await(s.save.Invoke(string(b)))
	return err
}

func (s *shop) current() (*selfverify.User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.user == nil {
		return nil, errSentence("Set up shopping first.")
	}
	return s.user, nil
}

// registerUser(id, code) → Promise {id}: ECQV registration with the
// operator's one-time enrolment code; k_U is drawn here and d_U never
// leaves the page.
func (s *shop) registerUser(_ js.Value, args []js.Value) any {
	if len(args) != 2 {
		return errorObj("svRegister needs the identity and the code")
	}
	id, code := strings.TrimSpace(args[0].String()), strings.TrimSpace(args[1].String())
	return promise(func(ctx context.Context) (any, error) {
		api, err := s.operator()
		if err != nil {
			return nil, err
		}
		cred, err := selfverify.Register(ctx, api, nil, id, selfverify.RoleUser, code)
		if err != nil {
			return nil, err
		}
		w := selfverify.NewWallet(cred)
		if err := s.persist(w); err != nil {
			return nil, err
		}
		u, err := selfverify.OpenUser(w, api, selfverify.WithSave(s.persist))
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.user = u
		s.mu.Unlock()
		return map[string]any{"id": u.ID()}, nil
	})
}

// status() → {id, currency, open, leftText (what the open tokens have left), tokens: [{serial, limitText, spentText, leftText, expires, closed}]}.
func (s *shop) status(js.Value, []js.Value) any {
	u, err := s.current()
	if err != nil {
		return errorObj(sentence(err))
	}
	w := u.Wallet()
	var toks []any
	var left int64
	open := 0
	now := time.Now().UnixMilli()
	for _, t := range w.Tokens {
		var spent int64
		for _, p := range w.Payments {
			if p.Serial == t.Token.Token.Serial {
				spent += p.Price
			}
		}
		tk := t.Token.Token
		if !t.Closed && now < tk.ExpiresAt {
			left += tk.Limit - spent
			open++
		}
		toks = append(toks, map[string]any{"serial": tk.Serial, "limitText": money.Format(tk.Limit, tk.Currency),
			"spentText": money.Format(spent, tk.Currency), "leftText": money.Format(tk.Limit-spent, tk.Currency),
			"expires": float64(tk.ExpiresAt), "closed": t.Closed})
	}
	return map[string]any{"id": w.ID, "currency": w.Currency, "tokens": toks, "open": open, "leftText": money.Format(left, w.Currency)}
}

// withdraw(amountText) → Promise {serial, limitText, expires}: W moves
// from the account into escrow for a token signed by the operator.
func (s *shop) withdraw(_ js.Value, args []js.Value) any {
	if len(args) != 1 {
		return errorObj("svWithdraw needs the amount")
	}
	text := args[0].String()
	return promise(func(ctx context.Context) (any, error) {
		u, err := s.current()
		if err != nil {
			return nil, err
		}
		a, err := money.ParsePositive(strings.TrimSpace(text), u.Wallet().Currency)
		if err != nil {
			return nil, errSentence("Enter an amount such as 50.00.")
		}
		st, err := u.Withdraw(ctx, a.Minor, 0)
		if err != nil {
			return nil, err
		}
		return map[string]any{"serial": st.Token.Serial, "limitText": money.Format(st.Token.Limit, st.Token.Currency),
			"expires": float64(st.Token.ExpiresAt)}, nil
	})
}

// vendor(codeText) → Promise {url, item, vendor, description, priceText}:
// what the wallet shows before paying a vendor whose code it scanned.
func (s *shop) vendor(_ js.Value, args []js.Value) any {
	if len(args) != 1 {
		return errorObj("svVendor needs the code's text")
	}
	c, err := selfverify.ParseVendorCode(args[0].String())
	if err != nil {
		return errorObj("This is not a shop's payment code.")
	}
	return promise(func(ctx context.Context) (any, error) {
		v, err := s.vendorAt(c.URL)
		if err != nil {
			return nil, err
		}
		info, err := v.Info(ctx)
		if err != nil {
			return nil, err
		}
		for _, it := range info.Catalog {
			if it.ID == c.Item {
				return map[string]any{"url": c.URL, "item": it.ID, "vendor": info.ID, "description": it.Description,
					"priceText": money.Format(it.Price, info.Currency)}, nil
			}
		}
		return nil, errSentence(fmt.Sprintf("The shop %s does not sell this item any more.", info.ID))
	})
}

// pay(url, item) → Promise {vendor, item, priceText, goods, seq, spentText}.
func (s *shop) pay(_ js.Value, args []js.Value) any {
	if len(args) != 2 {
		return errorObj("svPay needs the vendor and the item")
	}
	c, err := selfverify.ParseVendorCode("SV1|" + args[0].String() + "|" + args[1].String())
	if err != nil {
		return errorObj("This is not a shop's payment code.")
	}
	return promise(func(ctx context.Context) (any, error) {
		u, err := s.current()
		if err != nil {
			return nil, err
		}
		v, err := s.vendorAt(c.URL)
		if err != nil {
			return nil, err
		}
		info, err := v.Info(ctx)
		if err != nil {
			return nil, err
		}
		rc, err := u.Pay(ctx, v, c.Item)
		if err != nil {
			return nil, err
		}
		return map[string]any{"vendor": info.ID, "item": rc.Item, "priceText": money.Format(rc.Price, info.Currency),
			"goods": rc.Goods, "seq": rc.Seq, "spentText": money.Format(rc.SpentAtVendor, info.Currency)}, nil
	})
}

// confirm() → Promise {answers: [{vendor, amountText, payments, agreed, state}]}:
// every pending deposit confirmation of every open token is decrypted under
// K_UN and answered; the wallet agrees exactly when every payment in it is
// one this phone made, to that shop, at that amount (as the CLI does).
func (s *shop) confirm(js.Value, []js.Value) any {
	return promise(func(ctx context.Context) (any, error) {
		u, err := s.current()
		if err != nil {
			return nil, err
		}
		w := u.Wallet()
		answers := []any{}
		for _, t := range w.Tokens {
			if t.Closed {
				continue
			}
			seen := map[string]selfverify.ConfirmationDetails{}
			decide := func(d selfverify.ConfirmationDetails, known bool) bool {
				seen[d.ID] = d
				return known
			}
			list, err := u.Confirm(ctx, t.Token.Token.Serial, decide)
			if err != nil && !errors.Is(err, selfverify.ErrTokenExpired) && !errors.Is(err, selfverify.ErrTokenClosed) {
				return nil, err
			}
			for _, st := range list {
				d := seen[st.ID]
				answers = append(answers, map[string]any{"vendor": d.Vendor, "amountText": money.Format(st.Amount, w.Currency),
					"payments": len(d.Items), "agreed": st.State != "refused", "state": st.State})
			}
		}
		return map[string]any{"answers": answers}, nil
	})
}

// ---------- transport: the page's fetch ----------

// pageFetch is an httpx.Doer over the page's fetch function, so
// that the wallet talks to the operator and to shops through selfverify's
// own clients (OperatorClient, VendorClient: the CLI phone's), with the
// page's transport: no credentials, no cache, CORS to a shop's origin.
type pageFetch struct{ s *shop }

func (t pageFetch) Do(req *http.Request) (*http.Response, error) {
	hdrs := map[string]any{}
	for k, vs := range req.Header {
		if len(vs) > 0 {
			hdrs[k] = vs[0]
		}
	}
	var body any = js.Undefined()
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = string(b)
	}
	res, err := await(t.s.fetch.Invoke(req.URL.String(), req.Method, hdrs, body))
	if err != nil {
		return nil, err
	}
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	h := http.Header{}
	if ct := res.Get("contentType"); ct.Type() == js.TypeString {
		h.Set("Content-Type", ct.String())
	}
	text := res.Get("body").String()
	return &http.Response{StatusCode: res.Get("status").Int(), Header: h, Body: io.NopCloser(strings.NewReader(text)),
		ContentLength: int64(len(text)), Request: req}, nil
}

func (s *shop) http() pageFetch { return pageFetch{s} }

// operator is the operator's API at the page's origin.
func (s *shop) operator() (selfverify.OperatorAPI, error) {
	return selfverify.NewOperatorClient(s.origin, s.http())
}

// vendorAt is a shop's API at its own origin (the shop answers CORS).
// Nothing identifying the user is sent.
func (s *shop) vendorAt(base string) (*selfverify.VendorClient, error) {
	return selfverify.NewVendorClient(base, s.http())
}

// ---------- promises ----------

// sentenceErr is an error already worded for the payer.
type sentenceErr string

func (e sentenceErr) Error() string { return string(e) }
func errSentence(s string) error    { return sentenceErr(s) }

// sentence words err for the payer: the server's own sentence, or ours for
// the wallet's own refusals; never an internal code.
func sentence(err error) string {
	var se sentenceErr
	var p *httpx.Problem
	switch {
	case errors.As(err, &se):
		return string(se)
	case errors.Is(err, selfverify.ErrOverspend):
		return "Your shopping balance is too low for this. Withdraw more first."
	case errors.Is(err, selfverify.ErrInsufficientFunds):
		return "Your account does not have enough money for this."
	case errors.Is(err, selfverify.ErrBadEnrollment):
		return "The identity or the one-time code is not valid. Ask the operator for a new code."
	case errors.Is(err, selfverify.ErrDecrypt):
		return "The shop could not open the payment: it was changed on the way. Nothing was paid."
	case errors.Is(err, selfverify.ErrBadSignature):
		return "The answer could not be verified, so it was not accepted. Nothing was paid."
	case errors.As(err, &p) && p.Title != "" && !strings.HasPrefix(p.Code, "http_"):
		return p.Title
	case errors.As(err, &p):
		return "The service is unavailable for a moment. Please try again."
	case errors.Is(err, selfverify.ErrInvalidMessage):
		return "The answer could not be read. Nothing was paid."
	}
	return "The request could not be sent. Check your connection and try again."
}

// promise runs f in a goroutine (a blocking call inside a JavaScript
// callback would deadlock) and resolves with its result, or with {error}
// worded for the payer.
func promise(f func(ctx context.Context) (any, error)) js.Value {
	var exec js.Func
	exec = js.FuncOf(func(_ js.Value, args []js.Value) any {
		resolve := args[0]
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			v, err := f(ctx)
			if err != nil {
				js.Global().Get("console").Call("info", "qshield selfverify:", err.Error())
				resolve.Invoke(errorObj(sentence(err)))
				return
			}
			resolve.Invoke(v)
		}()
		return nil
	})
	p := js.Global().Get("Promise").New(exec)
	exec.Release()
	return p
}

// await blocks the calling goroutine (never a callback's) until p settles.
func await(p js.Value) (js.Value, error) {
	type settled struct {
		v   js.Value
		err error
	}
	ch := make(chan settled, 1)
	ok := js.FuncOf(func(_ js.Value, a []js.Value) any {
		var v js.Value
		if len(a) > 0 {
			v = a[0]
		}
		ch <- settled{v: v}
		return nil
	})
	fail := js.FuncOf(func(_ js.Value, a []js.Value) any {
		msg := "rejected"
		if len(a) > 0 {
			msg = a[0].Call("toString").String()
		}
		ch <- settled{err: errors.New(msg)}
		return nil
	})
	p.Call("then", ok, fail)
	r := <-ch
	ok.Release()
	fail.Release()
	return r.v, r.err
}
