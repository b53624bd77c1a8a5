import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { listToolCallsForCase } from '../../runtime/store/tool-calls.ts';
import { fixedNow, openToolFixture, orderIds, toolErrorCode, type ToolFixture } from './fixture.ts';

describe('ask_rider_eta', () => {
  let fixture: ToolFixture;

  beforeEach(() => {
    fixture = openToolFixture();
  });

  afterEach(() => {
    fixture.cleanup();
  });

  it('names the rider of a delivering order', () => {
    const fromUser = fixture.call('ask_rider_eta', { orderId: orderIds.c001Late }, 'user_agent');
    const fromRider = fixture.call('ask_rider_eta', { orderId: orderIds.c001OnTime }, 'rider_agent');

    expect(fromUser.output).toEqual({ orderId: orderIds.c001Late, riderId: 'R001' });
    expect(fromRider.output).toEqual({ orderId: orderIds.c001OnTime, riderId: 'R002' });
  });

  it('records the call', () => {
    fixture.call('ask_rider_eta', { orderId: orderIds.c001Late }, 'user_agent', 'ask-1');
    const [call] = listToolCallsForCase(fixture.store.db, fixture.case.id);

    expect(call).toMatchObject({ tool: 'ask_rider_eta', role: 'user_agent', idempotencyKey: 'ask-1', status: 'ok' });
    expect(call?.output).toEqual({ orderId: orderIds.c001Late, riderId: 'R001' });
  });

  it('rejects orders not being delivered', () => {
    const preparing = toolErrorCode(() => fixture.call('ask_rider_eta', { orderId: orderIds.c001Preparing }, 'user_agent'));
    const delivered = toolErrorCode(() => fixture.call('ask_rider_eta', { orderId: orderIds.c001Delivered }, 'user_agent'));

    expect(preparing).toBe('invalid_state');
    expect(delivered).toBe('invalid_state');
  });

  it('denies operators', () => {
    const code = toolErrorCode(() => fixture.call('ask_rider_eta', { orderId: orderIds.c001Late }, 'operator'));

    expect(code).toBe('permission_denied');
  });

  it('rejects an unknown order', () => {
    const code = toolErrorCode(() => fixture.call('ask_rider_eta', { orderId: 'D20990101999' }, 'user_agent'));

    expect(code).toBe('not_found');
  });
});

describe('record_rider_eta', () => {
  let fixture: ToolFixture;

  beforeEach(() => {
    fixture = openToolFixture();
  });

  afterEach(() => {
    fixture.cleanup();
  });

  it('returns the expected arrival time', () => {
    const { output } = fixture.call('record_rider_eta', { orderId: orderIds.c001Late, etaMin: 12 }, 'rider_agent');

    expect(output).toEqual({ etaMin: 12, expectedAt: fixedNow + 12 * 60_000 });
  });

  it('stores the ETA in the tool call log', () => {
    fixture.call('record_rider_eta', { orderId: orderIds.c001Late, etaMin: 7 }, 'rider_agent', 'eta-1');
    const [call] = listToolCallsForCase(fixture.store.db, fixture.case.id);

    expect(call?.tool).toBe('record_rider_eta');
    expect(call?.input).toEqual({ orderId: orderIds.c001Late, etaMin: 7 });
    expect(call?.output).toEqual({ etaMin: 7, expectedAt: fixedNow + 7 * 60_000 });
  });

  it('allows only the rider agent', () => {
    const input = { orderId: orderIds.c001Late, etaMin: 5 };

    expect(toolErrorCode(() => fixture.call('record_rider_eta', input, 'user_agent'))).toBe('permission_denied');
    expect(toolErrorCode(() => fixture.call('record_rider_eta', input, 'operator'))).toBe('permission_denied');
  });

  it('accepts 0 to 180 minutes', () => {
    const zero = fixture.call('record_rider_eta', { orderId: orderIds.c001Late, etaMin: 0 }, 'rider_agent');
    const max = fixture.call('record_rider_eta', { orderId: orderIds.c001Late, etaMin: 180 }, 'rider_agent');

    expect(zero.output.etaMin).toBe(0);
    expect(max.output.etaMin).toBe(180);
  });

  it('rejects invalid ETAs', () => {
    const values: unknown[] = [-1, 181, 2.5, '10', null];
    for (const etaMin of values) {
      const code = toolErrorCode(() => fixture.call('record_rider_eta', { orderId: orderIds.c001Late, etaMin }, 'rider_agent'));

      expect(code).toBe('invalid_input');
    }
  });

  it('rejects orders not being delivered', () => {
    const code = toolErrorCode(() =>
      fixture.call('record_rider_eta', { orderId: orderIds.c001Preparing, etaMin: 10 }, 'rider_agent'),
    );

    expect(code).toBe('invalid_state');
  });
});
