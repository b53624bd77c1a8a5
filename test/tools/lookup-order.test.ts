import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { listToolCallsForCase } from '../../runtime/store/tool-calls.ts';
import type { OrderView, ServiceOrderView } from '../../tools/lookup-order.ts';
import type { CallerRole } from '../../tools/roles.ts';
import { openToolFixture, orderIds, toolErrorCode, type ToolFixture } from './fixture.ts';

const customerPhone = '13812345678';
const customerAddress = '上海市徐汇区漕溪北路88号2号楼1203室';

function asServiceView(view: OrderView): ServiceOrderView {
  if (view.view !== 'service') {
    throw new Error(`expected the service view, got the ${view.view} view`);
  }
  return view;
}

describe('lookup_order', () => {
  let fixture: ToolFixture;

  beforeEach(() => {
    fixture = openToolFixture();
  });

  afterEach(() => {
    fixture.cleanup();
  });

  it('shows the service view to the user agent', () => {
    const { output } = fixture.call('lookup_order', { orderId: orderIds.c001Late }, 'user_agent');

    expect(output).toMatchObject({
      view: 'service',
      orderId: orderIds.c001Late,
      status: 'delivering',
      amountFen: 3800,
      merchantName: '老王牛肉面',
      riderId: 'R001',
      riderName: '刘强',
      riderEtaMin: 12,
      lateByMin: 20,
      customerPhoneMasked: '138****5678',
    });
    expect(asServiceView(output).items).toHaveLength(2);
  });

  it('reports on-time orders as 0 late', () => {
    const onTime = fixture.call('lookup_order', { orderId: orderIds.c001OnTime }, 'user_agent').output;
    const delivered = fixture.call('lookup_order', { orderId: orderIds.c001Delivered }, 'user_agent').output;

    expect(asServiceView(onTime).lateByMin).toBe(0);
    expect(asServiceView(delivered).lateByMin).toBe(0);
  });

  it('shows the service view to operators', () => {
    const { output } = fixture.call('lookup_order', { orderId: orderIds.c003Cancelled }, 'operator');

    expect(asServiceView(output).lateByMin).toBeNull();
  });

  it('shows the full address only to the rider agent', () => {
    const riderOutput = fixture.call('lookup_order', { orderId: orderIds.c001Late }, 'rider_agent').output;
    const userOutput = fixture.call('lookup_order', { orderId: orderIds.c001Late }, 'user_agent').output;

    expect(riderOutput).toMatchObject({
      view: 'rider',
      status: 'delivering',
      customerAddress,
      merchantAddress: '上海市徐汇区宜山路455号',
      customerPhoneMasked: '138****5678',
    });
    expect(JSON.stringify(userOutput)).not.toContain('漕溪北路');
  });

  it('masks the phone in every view', () => {
    const roles: CallerRole[] = ['user_agent', 'rider_agent', 'operator'];
    for (const role of roles) {
      const { output } = fixture.call('lookup_order', { orderId: orderIds.c001Late }, role);

      expect(output.customerPhoneMasked).toBe('138****5678');
      expect(JSON.stringify(output)).not.toContain(customerPhone);
    }
  });

  it('rejects an unknown order', () => {
    const code = toolErrorCode(() => fixture.call('lookup_order', { orderId: 'D20990101999' }, 'user_agent'));

    expect(code).toBe('not_found');
  });

  it("keeps agents off other customers' orders", () => {
    const agentCode = toolErrorCode(() => fixture.call('lookup_order', { orderId: orderIds.c003OnTime }, 'user_agent'));
    const riderCode = toolErrorCode(() => fixture.call('lookup_order', { orderId: orderIds.c003OnTime }, 'rider_agent'));
    const operator = fixture.call('lookup_order', { orderId: orderIds.c003OnTime }, 'operator');

    expect(agentCode).toBe('permission_denied');
    expect(riderCode).toBe('permission_denied');
    expect(operator.output.orderId).toBe(orderIds.c003OnTime);
  });

  it('rejects invalid input', () => {
    const inputs: unknown[] = [undefined, null, {}, { orderId: 42 }, { orderId: '' }, { orderId: 'x', extra: true }, 'D1'];
    for (const input of inputs) {
      expect(toolErrorCode(() => fixture.call('lookup_order', input, 'user_agent'))).toBe('invalid_input');
    }
  });

  it('logs no full phone number', () => {
    const roles: CallerRole[] = ['user_agent', 'rider_agent', 'operator'];
    for (const role of roles) {
      fixture.call('lookup_order', { orderId: orderIds.c001Late }, role);
    }
    const calls = listToolCallsForCase(fixture.store.db, fixture.case.id);

    expect(calls).toHaveLength(3);
    expect(JSON.stringify(calls)).not.toContain(customerPhone);
  });
});
